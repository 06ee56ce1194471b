"""The studio's settings and its HTTP API, driven with gradio_client against a real server."""
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from app_server import running_app
from utils.backends import BACKENDS
from utils.config import ConfigError, load_config, parse_timesteps, resolve_timesteps, with_overrides
from utils.settings import SPECS, RunSettings, unread_message, unread_settings
from utils.studio.catalog import unavailable_line
from utils.studio.settings import Settings, config_for

SET5 = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "Set5"
MAX_PIXELS = 10_000  # passed as --max-pixels; every test image but the pixel-limit one is below it


# ---- settings → config (no server) ---------------------------------------------------------------

@pytest.fixture(scope="module")
def cfg():
    return load_config()


def _settings(cfg, **changes) -> Settings:
    return Settings(**{**vars(Settings.defaults(cfg, "realesrgan")), **changes})


def test_settings_defaults_follow_the_config(cfg):
    s = Settings.defaults(cfg, "realesrgan")
    assert s.overlap == 40 and s.tile_size == 448  # the spec's defaults: the YAML leaves both null
    assert (s.color_fix, s.seed, s.outscale, s.denoise) == (cfg.color_fix, cfg.seed, cfg.outscale, cfg.waifu2x.denoise)
    assert (s.min_overlap, s.max_overlap) == (cfg.postprocess.min_overlap, cfg.postprocess.max_overlap)
    assert Settings.defaults(cfg, "invsr").tile_size == 128
    assert Settings.defaults(cfg, "invsr").overlap is None  # InvSR's patches always overlap by half


def test_settings_become_the_cli_config_keys(cfg):
    s = _settings(cfg, tile_size=128, overlap=12, edge_enhancement=True, edge_strength=0.3, timesteps="250, 100",
                  outscale=2.0, format="webp", quality=80, smart_chopping=True, min_overlap=0.2, max_overlap=0.55)
    out = config_for(cfg, s, "realesrgan")
    assert (out.realesrgan.tile_size, out.realesrgan.tile_margin) == (128, 12)
    assert out.basesr.chopping.pch_size == cfg.basesr.chopping.pch_size  # other backends' keys untouched
    assert out.span.tile_margin == cfg.span.tile_margin
    assert out.postprocess.edge_enhancement == pytest.approx(0.3)
    assert list(out.timesteps) == [250, 100]
    assert (out.outscale, out.output.format, out.output.quality) == (2.0, "webp", 80)
    assert out.postprocess.smart_chopping and out.postprocess.min_overlap == pytest.approx(0.2)
    assert config_for(cfg, _settings(cfg, edge_strength=0.9), "realesrgan").postprocess.edge_enhancement == 0.0
    assert config_for(cfg, _settings(cfg, backend="invsr", tile_size=256), "invsr").basesr.chopping.pch_size == 256
    assert config_for(cfg, _settings(cfg, backend="waifu2x", denoise=2), "waifu2x").waifu2x.denoise == 2
    assert config_for(cfg, _settings(cfg, outscale="3"), "realesrgan").outscale == 3.0  # typed into the scale box


def test_unset_settings_keep_the_config_values(cfg):
    """None (what an API client that leaves a setting out sends) means the backend's own default."""
    yaml = with_overrides(cfg, {"timesteps": [300, 100], "span.tile_margin": 9})
    unset = _settings(cfg, backend="span", tile_size=None, overlap=None, num_steps=None, seed=None, timesteps="",
                      denoise=None)
    out = config_for(yaml, unset, "span")
    assert (out.span.tile_size, out.span.tile_margin) == (None, 9)  # None: the spec's default
    assert list(out.timesteps) == [300, 100] and out.seed == cfg.seed
    assert resolve_timesteps(config_for(yaml, unset.replace(backend="invsr", num_steps=3), "invsr")) == [200, 100, 50]


def test_settings_a_backend_does_not_read(cfg):
    s = _settings(cfg, backend="span")
    assert unread_settings(vars(s), "span") == ["denoise", "num_steps", "seed"]
    page = s.applicable()  # what the page sends: disabled controls unset
    assert (page.num_steps, page.seed, page.timesteps, page.denoise) == (None, None, "", None)
    assert page.tile_size == s.tile_size and page.overlap == s.overlap
    assert unread_settings(vars(page), "span") == []
    assert unread_settings({"overlap": 8, "timesteps": [200]}, "invsr") == ["overlap"]
    assert unread_message("overlap", "invsr") == ("overlap applies only to realesrgan, span, realesrgan-anime, "
                                                  "waifu2x and bicubic, not invsr")


@pytest.mark.parametrize("field, value, message", [
    ("tile_size", 7, "realesrgan.tile_size"), ("overlap", -1, "realesrgan.tile_margin"),
    ("min_overlap", 0.5, "min_overlap < max_overlap"), ("max_overlap", 0.2, "min_overlap < max_overlap"),
    ("outscale", 8, "outscale must be between 1 and 4"), ("outscale", "seven", "outscale must be between"),
    ("format", "gif", "output.format"), ("num_steps", 6, "num_steps"), ("timesteps", "100,200", "descending"),
    ("quality", 80.5, "output.quality")])
def test_out_of_range_settings_are_named(cfg, field, value, message):
    """The app's settings go through the one config validation, like the CLI's flags."""
    with pytest.raises(ConfigError, match=message):
        backend = "invsr" if field in ("num_steps", "timesteps") else "realesrgan"
        s = _settings(cfg, backend=backend, **{field: value})
        RunSettings.from_config(config_for(cfg, s, backend), backend)


def test_parse_timesteps():
    assert parse_timesteps("") is None
    assert parse_timesteps(" 200,100 ,50") == [200, 100, 50]
    for bad in ("a,b", "1000", "5,4,3,2,1,0", "300,250,200,150,100,50"):
        with pytest.raises(ValueError):
            parse_timesteps(bad)


# ---- the running app ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("studio")
    (work / "inputs").mkdir()
    (work / "elsewhere").mkdir()
    return work


@pytest.fixture(scope="module")
def client(work):
    with running_app(work, "--max-pixels", str(MAX_PIXELS), "--max-file-size", "1mb") as url:
        yield Client(url, verbose=False)


def crop(size: int, left: int = 100, top: int = 60) -> Image.Image:
    return Image.open(SET5 / "butterfly.png").convert("RGB").crop((left, top, left + size, top + size))


def table_rows(table: dict) -> dict[str, tuple[str, str]]:
    return {row[0]: (row[1], row[2]) for row in table["data"]}


def test_upscale_endpoint_realesrgan_gives_4x_lossless_png(client, tmp_path):
    crop(32).save(tmp_path / "crop.png")
    (before, after), download, info = client.predict(handle_file(str(tmp_path / "crop.png")), api_name="/upscale")
    assert Path(download).name == "crop_realesrgan_x4.png"  # the download name carries backend and scale
    with Image.open(download) as result:
        assert (result.format, result.size) == ("PNG", (128, 128))
    assert Image.open(before).size == Image.open(after).size == (128, 128)
    assert info.startswith("realesrgan ×4") and "32×32 → 128×128" in info


def test_upscale_settings_are_applied(client, tmp_path):
    crop(32).save(tmp_path / "crop.png")
    _, download, info = client.predict(handle_file(str(tmp_path / "crop.png")), backend="bicubic", outscale=2,
                                       color_fix="none", api_name="/upscale")
    assert Path(download).name == "crop_bicubic_x2.png" and Image.open(download).size == (64, 64)
    assert "bicubic" in info and "color fix none" in info


def test_single_image_format_quality_and_scale(client, tmp_path):
    crop(32).save(tmp_path / "crop.png")
    sizes = {}
    for quality in (30, 95):
        _, download, _ = client.predict(handle_file(str(tmp_path / "crop.png")), backend="span", outscale=3,
                                        format="jpeg", quality=quality, api_name="/upscale")
        assert Path(download).name == "crop_span_x3.jpg"
        with Image.open(download) as im:
            assert (im.format, im.size) == ("JPEG", (96, 96))
        sizes[quality] = Path(download).stat().st_size
    assert sizes[30] < sizes[95]


def psnr(a: str, b: str) -> float:
    x, y = (np.asarray(Image.open(p).convert("RGB"), np.float64) for p in (a, b))
    return float(10 * np.log10(255 ** 2 / np.mean((x - y) ** 2)))


def test_tile_size_and_overlap_keywords(client, tmp_path):
    """Small tiles with SPAN's full context reproduce the whole-image result; without overlap they differ."""
    crop(96).save(tmp_path / "crop.png")

    def run(**tiling):
        _, download, _ = client.predict(handle_file(str(tmp_path / "crop.png")), backend="span", color_fix="none",
                                        api_name="/upscale", **tiling)
        return download

    whole = run()  # tile_size and overlap left out: SPAN's own (512 px: one tile here)
    assert psnr(run(tile_size=32, overlap=SPECS["span"].context_margin), whole) > 90
    assert psnr(run(tile_size=32, overlap=0), whole) < 70


def test_waifu2x_denoise_keyword(client, tmp_path):
    crop(32).save(tmp_path / "crop.png")
    outputs = [client.predict(handle_file(str(tmp_path / "crop.png")), backend="waifu2x", denoise=level,
                              color_fix="none", api_name="/upscale")[1] for level in (-1, 3)]
    assert psnr(*outputs) < 45  # the strongest denoising changes the result


def test_an_unavailable_backend_gets_the_pages_one_line_reason(client, cfg, work, tmp_path):
    status = BACKENDS["invsr"].availability(cfg)
    assert not status.ok, "this test needs a machine without the InvSR weights"
    crop(16).save(tmp_path / "crop.png")
    with pytest.raises(AppError) as err:
        client.predict(handle_file(str(tmp_path / "crop.png")), backend="invsr", api_name="/upscale")
    assert str(err.value) == unavailable_line("invsr", status) and "\n" not in str(err.value)
    assert "Traceback" not in (work / "server.log").read_text()


@pytest.mark.parametrize("settings, message", [
    (dict(backend="span", num_steps=2), "Steps applies only to InvSR, not SPAN"),
    (dict(backend="bicubic", seed=3), "Seed applies only to InvSR, not Bicubic"),
    (dict(backend="span", denoise=1), "waifu2x denoise applies only to waifu2x, not SPAN"),
    (dict(backend="bicubic", attention_fusion=True), "Attention fusion applies only to"),
    (dict(tile_size=7), r"^Tile size must be a whole number of at least 16 px \(got 7\)$"),
    (dict(backend="nope"), "unknown backend 'nope'")])
def test_settings_that_cannot_apply_are_refused(client, tmp_path, settings, message):
    crop(16).save(tmp_path / "crop.png")
    with pytest.raises(AppError, match=message):
        client.predict(handle_file(str(tmp_path / "crop.png")), api_name="/upscale", **settings)


def test_corrupt_upload_is_an_error_naming_the_file(client, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(AppError, match=r"broken\.png: not a readable image"):
        client.predict(handle_file(str(bad)), api_name="/upscale")


def test_pixel_limit_is_an_error(client, tmp_path):
    crop(101).save(tmp_path / "big.png")
    with pytest.raises(AppError, match=r"big\.png: 101×101 = 10,201 pixels exceeds the limit of 10,000"):
        client.predict(handle_file(str(tmp_path / "big.png")), api_name="/upscale")


def test_upload_over_max_file_size_is_refused(client, tmp_path):
    big = tmp_path / "huge.png"
    big.write_bytes(b"\0" * (1024 * 1024 + 1))
    with pytest.raises(Exception, match="(?i)size|large|413"):
        client.predict(handle_file(str(big)), api_name="/upscale")


def test_bad_setting_is_an_error(client, tmp_path):
    crop(16).save(tmp_path / "crop.png")
    with pytest.raises(AppError, match="smart chopping overlaps must satisfy 0 ≤ Least overlap < Most overlap"):
        client.predict(handle_file(str(tmp_path / "crop.png")), min_overlap=0.5, max_overlap=0.45,
                       api_name="/upscale")


def test_batch_folder_reports_each_file_and_resumes(client, work):
    folder = work / "inputs" / "set"
    folder.mkdir()
    crop(32).save(folder / "good.png")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    table, archive, summary = client.predict(folder="set", api_name="/batch")
    rows = table_rows(table)
    assert rows["good.png"] == ("ok", "")
    assert rows["corrupt.jpg"][0] == "error" and "corrupt.jpg: not a readable image" in rows["corrupt.jpg"][1]
    out = work / "outputs" / "set_realesrgan_x4"
    assert Image.open(out / "good.png").size == (128, 128)
    assert sorted(p.name for p in folder.iterdir()) == ["corrupt.jpg", "good.png"]  # inputs untouched
    assert zipfile.ZipFile(archive).namelist() == ["good.png"]
    assert Path(archive).name == "set_realesrgan_x4.zip"  # named by the folder, backend and scale
    assert summary == "1 ok, 1 error → outputs/set_realesrgan_x4; zip: set_realesrgan_x4.zip"  # no server path

    table, _, _ = client.predict(folder="set", api_name="/batch")
    assert table_rows(table)["good.png"] == ("skipped", "same input and settings")
    # Another colour fix redoes the file and says why; the zip then holds the new result.
    before = (out / "good.png").read_bytes()
    table, archive, _ = client.predict(folder="set", color_fix="none", api_name="/batch")
    assert table_rows(table)["good.png"] == ("ok", "redone: colour fix changed")
    assert (out / "good.png").read_bytes() != before
    assert zipfile.ZipFile(archive).read("good.png") == (out / "good.png").read_bytes()


def test_a_file_symlinked_into_the_batch_root_from_outside_is_refused(client, work):
    folder = work / "inputs" / "linked"
    folder.mkdir()
    crop(16).save(folder / "inside.png")
    crop(16, left=40).save(work / "elsewhere" / "secret.png")
    (folder / "secret.png").symlink_to(work / "elsewhere" / "secret.png")
    table, archive, _ = client.predict(folder="linked", api_name="/batch")
    rows = table_rows(table)
    assert rows["inside.png"][0] == "ok"
    assert rows["secret.png"] == ("error", "secret.png: a symbolic link leading outside the batch root; refused")
    assert zipfile.ZipFile(archive).namelist() == ["inside.png"]
    assert not (work / "outputs" / "linked_realesrgan_x4" / "secret.png").exists()


@pytest.mark.parametrize("name", ["..", "../elsewhere", "set/../../elsewhere", "{work}/elsewhere", "/etc", "escape"])
def test_batch_folder_outside_the_root_is_refused(client, work, name):
    link = work / "inputs" / "escape"
    if not link.is_symlink():
        link.symlink_to(work / "elsewhere")
    with pytest.raises(AppError, match=r"not allowed|outside the batch root"):
        client.predict(folder=name.format(work=work), api_name="/batch")


def test_batch_zip_upload(client, tmp_path):
    crop(24).save(tmp_path / "a.png")
    archive = tmp_path / "pack.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(tmp_path / "a.png", "sub/a.png")
        zf.writestr("__MACOSX/sub/._a.png", b"resource fork")
    table, result_zip, summary = client.predict(files=[handle_file(str(archive))], backend="span",
                                                api_name="/batch")
    assert table_rows(table) == {"pack/sub/a.png": ("ok", "")}
    assert zipfile.ZipFile(result_zip).namelist() == ["pack/sub/a.png"]
    assert Path(result_zip).name == "pack_span_x4.zip" and summary == "1 ok → pack_span_x4.zip"


def test_batch_zip_with_unsafe_member_is_refused(client, tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../../evil.png", b"x")
    with pytest.raises(AppError, match=r"evil\.zip: member '\.\./\.\./evil\.png' contains '\.\.'"):
        client.predict(files=[handle_file(str(archive))], api_name="/batch")


def test_cancel_stops_between_images_without_partial_files_and_rerun_resumes(client, work):
    folder = work / "inputs" / "many"
    folder.mkdir()
    for i in range(6):  # enough work left after the first result for the cancel to land mid-batch
        crop(64, left=20 * i).save(folder / f"img{i}.png")
    out = work / "outputs" / "many_realesrgan_x4"
    job = client.submit(folder="many", api_name="/batch")
    deadline = time.monotonic() + 120
    while not list(out.glob("*.png")):
        assert time.monotonic() < deadline and not job.done(), "the batch never wrote its first result"
        time.sleep(0.05)
    client.predict(api_name="/cancel")
    table, _, summary = job.result(timeout=120)
    statuses = [row[1] for row in table["data"]]
    assert summary.startswith("Cancelled") and "cancelled" in statuses
    written = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))  # resume records aside
    assert written == sorted(row[0] for row in table["data"] if row[1] == "ok")  # no partial or stray files

    # Rerun on the finished files only (the others removed, to spare the CPU): all are skipped.
    for row in table["data"]:
        if row[1] == "cancelled":
            (folder / row[0]).unlink()
    table, _, _ = client.predict(folder="many", api_name="/batch")
    assert {row[0]: row[1] for row in table["data"]} == {name: "skipped" for name in written}
