import io
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from datapipe.image_io import (PART_SUFFIX, ImageError, LoadedImage, encode_image, image_size, list_images,
                               read_image, remove_stale_parts, write_image)
from utils.backends.bicubic import BicubicBackend
from tests.conftest import interrupted_write, run_settings
from utils.batch.runner import process_one
from utils.pipeline.chain import upscale_image

FORMATS = {".png": 0.5 / 255, ".bmp": 0.5 / 255, ".tif": 0.5 / 255, ".jpg": 12 / 255, ".webp": 12 / 255}


def smooth_rgb(h=24, w=32):
    """A smooth colour ramp: lossy codecs keep it close, so round-trip tolerances stay meaningful."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.dstack([x / (w - 1), y / (h - 1), 0.5 + 0.25 * np.sin(x / 5)]).astype(np.float32)


def srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.mark.parametrize("ext", FORMATS)
def test_rgb_round_trip_every_format(tmp_path, ext):
    rgb = smooth_rgb()
    path = write_image(tmp_path / f"a{ext}", LoadedImage(rgb))
    back = read_image(path)
    assert back.rgb.shape == rgb.shape and back.rgb.dtype == np.float32
    assert not back.grayscale and back.alpha is None and back.bit_depth == 8
    assert np.abs(back.rgb - rgb).mean() <= FORMATS[ext]


@pytest.mark.parametrize("ext", [".png", ".tif", ".jpg"])
def test_grayscale_stays_grayscale(tmp_path, ext):
    g = smooth_rgb()[..., 0]
    Image.fromarray((g * 255).round().astype(np.uint8), "L").save(tmp_path / f"g{ext}")
    img = read_image(tmp_path / f"g{ext}")
    assert img.grayscale and np.allclose(img.rgb[..., 0], img.rgb[..., 2])
    write_image(tmp_path / f"out{ext}", img)
    with Image.open(tmp_path / f"out{ext}") as out:
        assert out.mode == "L"
    # WebP has no grayscale mode: a grayscale source is written as RGB with equal channels.
    write_image(tmp_path / "out.webp", img)
    webp = read_image(tmp_path / "out.webp").rgb
    assert np.abs(webp[..., 0] - webp[..., 2]).max() < 2 / 255


def test_sixteen_bit_png_keeps_its_precision(tmp_path):
    import cv2

    rng = np.random.default_rng(0)
    raw = rng.integers(0, 65536, size=(10, 12, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), raw[..., ::-1])
    img = read_image(tmp_path / "deep.png")
    assert img.bit_depth == 16
    np.testing.assert_allclose(img.rgb, raw / 65535.0, atol=1e-7)
    write_image(tmp_path / "copy.png", img)
    again = cv2.imread(str(tmp_path / "copy.png"), cv2.IMREAD_UNCHANGED)
    assert again.dtype == np.uint16
    np.testing.assert_array_equal(again[..., ::-1], raw)


def test_sixteen_bit_grayscale_png(tmp_path):
    raw = (np.arange(60, dtype=np.uint16).reshape(6, 10) * 1000 + 7)
    Image.fromarray(raw, "I;16").save(tmp_path / "g16.png")
    img = read_image(tmp_path / "g16.png")
    assert img.grayscale and img.bit_depth == 16
    np.testing.assert_allclose(img.rgb[..., 1], raw / 65535.0, atol=1e-7)
    write_image(tmp_path / "o.png", img)
    import cv2
    out = cv2.imread(str(tmp_path / "o.png"), cv2.IMREAD_UNCHANGED)
    assert out.dtype == np.uint16 and out.ndim == 2
    np.testing.assert_array_equal(out, raw)


def test_rgba_alpha_is_upscaled_separately_and_reattached(tmp_path, cfg):
    rgb = smooth_rgb(16, 20)
    alpha = np.zeros((16, 20), np.float32)
    alpha[:, 10:] = 1.0
    rgba = np.dstack([rgb, alpha])
    Image.fromarray((rgba * 255).round().astype(np.uint8), "RGBA").save(tmp_path / "a.png")
    img = read_image(tmp_path / "a.png")
    np.testing.assert_array_equal(img.alpha, alpha)
    out, _ = upscale_image(img, BicubicBackend(cfg), run_settings(cfg, "bicubic"))
    assert out.alpha.shape == (64, 80) and out.rgb.shape == (64, 80, 3)
    assert out.alpha[:, :36].max() < 0.02 and out.alpha[:, 44:].min() > 0.98
    write_image(tmp_path / "o.png", out)
    with Image.open(tmp_path / "o.png") as im:
        assert im.mode == "RGBA" and im.size == (80, 64)


def test_la_and_palette_sources(tmp_path):
    la = np.dstack([np.full((5, 6), 100, np.uint8), np.full((5, 6), 200, np.uint8)])
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    img = read_image(tmp_path / "la.png")
    assert img.grayscale and img.alpha is not None
    np.testing.assert_allclose(img.alpha, 200 / 255)
    pal = Image.fromarray((smooth_rgb() * 255).astype(np.uint8)).convert("P", palette=Image.Palette.ADAPTIVE)
    pal.save(tmp_path / "p.png")
    p = read_image(tmp_path / "p.png")
    assert p.rgb.shape == (24, 32, 3) and not p.grayscale


def test_cmyk_jpeg_is_converted_to_rgb(tmp_path):
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "c.jpg")  # pure red in CMYK
    img = read_image(tmp_path / "c.jpg")
    r, g, b = img.rgb.reshape(-1, 3).mean(axis=0)
    assert r > 0.9 and g < 0.1 and b < 0.1


@pytest.mark.parametrize("orientation,expected_shape", [(1, (4, 6)), (3, (4, 6)), (6, (6, 4)), (8, (6, 4))])
def test_exif_orientation_is_applied_and_reset(tmp_path, orientation, expected_shape):
    pixels = np.zeros((4, 6, 3), np.uint8)
    pixels[0, 0] = 255  # a white top-left marker
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "TestCam"  # Make
    Image.fromarray(pixels).save(tmp_path / "r.png", exif=exif.tobytes())
    img = read_image(tmp_path / "r.png")
    assert img.rgb.shape[:2] == expected_shape
    marker = tuple(int(v) for v in np.argwhere(img.rgb[..., 0] > 0.5)[0])
    h, w = expected_shape
    assert marker == {1: (0, 0), 3: (h - 1, w - 1), 6: (0, w - 1), 8: (h - 1, 0)}[orientation]
    write_image(tmp_path / "o.png", img)
    with Image.open(tmp_path / "o.png") as out:
        assert out.getexif().get(0x0112) == 1 and out.getexif().get(0x010F) == "TestCam"


@pytest.mark.parametrize("ext", [".png", ".jpg", ".webp", ".tif"])
def test_icc_profile_is_carried_over(tmp_path, ext):
    icc = srgb_profile()
    Image.fromarray((smooth_rgb() * 255).astype(np.uint8)).save(tmp_path / f"i{ext}", icc_profile=icc)
    img = read_image(tmp_path / f"i{ext}")
    assert img.icc_profile == icc
    write_image(tmp_path / f"o{ext}", img)
    with Image.open(tmp_path / f"o{ext}") as out:
        assert out.info.get("icc_profile") == icc


def test_icc_and_exif_survive_a_sixteen_bit_write(tmp_path):
    icc = srgb_profile()
    exif = Image.Exif()
    exif[0x010F] = "DeepCam"
    img = LoadedImage(smooth_rgb(), bit_depth=16, icc_profile=icc, exif=exif.tobytes())
    write_image(tmp_path / "d.png", img)
    with Image.open(tmp_path / "d.png") as out:
        assert out.info.get("icc_profile") == icc and out.getexif().get(0x010F) == "DeepCam"
    assert read_image(tmp_path / "d.png").bit_depth == 16


def test_unreadable_files_raise_clear_errors(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image")
    buf = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buf, "PNG")
    (tmp_path / "cut.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    for name, reason in [("empty.png", "empty"), ("text.png", "not a readable image"),
                         ("cut.png", "truncated"), ("missing.png", "not found")]:
        with pytest.raises(ImageError) as err:
            read_image(tmp_path / name)
        assert name in str(err.value) and reason in str(err.value)


def test_pixel_limit_is_checked_before_decoding(tmp_path):
    Image.new("RGB", (300, 200)).save(tmp_path / "big.png")
    with pytest.raises(ImageError, match="60,000 pixels exceeds the limit of 50,000"):
        read_image(tmp_path / "big.png", max_pixels=50_000)


def test_pillow_bomb_guard_stays_on_after_importing_the_project():
    # A fresh process: every library module and entry point imported, Pillow's limit still its default.
    code = ("import importlib, pkgutil\n"
            "from PIL import Image\n"
            "default = Image.MAX_IMAGE_PIXELS\n"
            "import datapipe, utils\n"
            "for pkg in (utils, datapipe):\n"
            "    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
            "        importlib.import_module(info.name)\n"
            "import app, inference_invsr, sampler_invsr\n"
            "print(default, Image.MAX_IMAGE_PIXELS)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parent.parent)  # where the entry points are
    assert res.returncode == 0, res.stderr
    default, after = res.stdout.split()[-2:]
    assert default != "None" and after == default


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width×height RGB but holds one byte of pixel data: Pillow opens it from the
    header alone, so only a decoder that ran would notice the missing pixels."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


@pytest.fixture
def pil_limit() -> int:
    assert Image.MAX_IMAGE_PIXELS is not None, "Pillow's decompression-bomb guard was switched off"
    return Image.MAX_IMAGE_PIXELS


# 10 000 wide: just over Pillow's limit, where it only warns (the size is known); 20 000 wide: over twice
# the limit, where Pillow raises from the header (only the pixel count is known).
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("width, size", [(10_000, "{w}×{h} = {n:,}"), (20_000, "{n:,}")], ids=["warns", "raises"])
def test_pillow_bomb_guard_caps_a_raised_project_limit(tmp_path, pil_limit, width, size):
    height = pil_limit // 10_000 + 1
    size = size.format(w=width, h=height, n=width * height)
    path = tmp_path / "huge.png"
    path.write_bytes(png_header(width, height))
    with pytest.raises(ImageError) as err:
        read_image(path, max_pixels=10 * pil_limit)
    assert str(err.value) == (f"huge.png: {size} pixels exceeds Pillow's decompression-bomb limit of "
                              f"{pil_limit:,} pixels, which caps limits.max_input_pixels")
    # Under the project's own, lower limit the message says how to raise that one.
    with pytest.raises(ImageError) as err:
        read_image(path, max_pixels=16_000_000)
    assert str(err.value) == (f"huge.png: {size} pixels exceeds the limit of 16,000,000 pixels "
                              "(raise limits.max_input_pixels to allow it)")


def test_image_size_reports_a_bomb_as_an_image_error(tmp_path, pil_limit):
    (tmp_path / "huge.png").write_bytes(png_header(20_000, pil_limit // 10_000 + 1))
    with pytest.raises(ImageError, match="huge.png: .* pixels exceeds Pillow's decompression-bomb limit"):
        image_size(tmp_path / "huge.png")


def test_list_images_sorted_filtered_and_optionally_recursive(tmp_path):
    for name in ["b.png", "a.JPG", "notes.txt", "c.webp"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.bmp").write_bytes(b"x")
    (tmp_path / "sub" / "loop").symlink_to(tmp_path, target_is_directory=True)
    assert [p.name for p in list_images(tmp_path)] == ["a.JPG", "b.png", "c.webp"]
    assert [p.name for p in list_images(tmp_path, recursive=True)] == ["a.JPG", "b.png", "c.webp", "d.bmp"]


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path, monkeypatch):
    target = tmp_path / "out.png"
    write_image(target, LoadedImage(smooth_rgb()))
    before = target.read_bytes()

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError):
        write_image(target, LoadedImage(np.zeros((3, 3, 3), np.float32)))
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_a_part_goes_when_its_writer_on_this_host_dies_not_while_it_lives(tmp_path):
    writer, part = interrupted_write(tmp_path / "a.png", hold=True)
    try:
        assert remove_stale_parts(tmp_path) == [] and part.exists()
    finally:
        writer.communicate(timeout=60)  # closing its stdin ends the writer, its temp file left behind
    assert remove_stale_parts(tmp_path) == [part] and not part.exists()


def test_a_part_of_another_host_stays_though_its_pid_is_dead_here(tmp_path):
    _, part = interrupted_write(tmp_path / "a.png", host="node-7.cluster.example")
    assert "node-7.cluster.example" in part.name
    assert remove_stale_parts(tmp_path) == [] and part.exists()


def test_parts_older_than_a_day_go_whoever_wrote_them(tmp_path):
    _, foreign = interrupted_write(tmp_path / "a.png", host="node-7")
    writer, live = interrupted_write(tmp_path / "b.png", hold=True)
    hostless_fresh = tmp_path / f".c.png.k2j9x1.{writer.pid}{PART_SUFFIX}"  # before host names: foreign
    hostless_old = tmp_path / f".d.png.q8w7e6.{writer.pid}{PART_SUFFIX}"
    unrelated = tmp_path / f".download{PART_SUFFIX}"
    for path in (hostless_fresh, hostless_old, unrelated):
        path.write_bytes(b"x")
    day_ago = time.time() - 24 * 3600 - 60
    for path in (foreign, live, hostless_old, unrelated):
        os.utime(path, (day_ago, day_ago))
    try:
        assert sorted(remove_stale_parts(tmp_path)) == sorted([foreign, live, hostless_old])
    finally:
        writer.communicate(timeout=60)
    assert hostless_fresh.exists() and unrelated.exists()


def test_unknown_output_extension_is_refused(tmp_path):
    with pytest.raises(ImageError, match="cannot write '.xyz'"):
        write_image(tmp_path / "o.xyz", LoadedImage(smooth_rgb()))


def test_a_file_is_never_written_over_its_input(tmp_path, cfg):
    src = write_image(tmp_path / "same.png", LoadedImage(smooth_rgb()))
    before = src.read_bytes()
    item = process_one(src, src, BicubicBackend(cfg), run_settings(cfg, "bicubic"))
    assert item.status == "error" and f"the output {src} is an input file" in item.reason
    assert src.read_bytes() == before


def test_encode_jpeg_drops_alpha_cleanly():
    img = LoadedImage(smooth_rgb(), alpha=np.ones((24, 32), np.float32))
    data = encode_image(img, "JPEG")
    assert Image.open(io.BytesIO(data)).mode == "RGB"
