"""The studio's settings and its HTTP API, driven with gradio_client against a real server."""
import time
import zipfile
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from app_server import running_app
from utils.app_settings import Settings, config_for
from utils.config import parse_timesteps
from utils.config import load_config

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
    assert s.chopping_size == cfg.realesrgan.tile_size
    assert (s.color_fix, s.seed, s.outscale) == (cfg.color_fix, cfg.seed, cfg.outscale)
    assert (s.min_overlap, s.max_overlap) == (cfg.postprocess.min_overlap, cfg.postprocess.max_overlap)


def test_settings_become_the_cli_config_keys(cfg):
    s = _settings(cfg, chopping_size=128, edge_enhancement=True, edge_strength=0.3, timesteps="250, 100",
                  outscale=2.0, format="webp", quality=80, smart_chopping=True, min_overlap=0.2, max_overlap=0.55)
    out = config_for(cfg, s, "realesrgan")
    assert out.realesrgan.tile_size == 128
    assert out.basesr.chopping.pch_size == cfg.basesr.chopping.pch_size  # other backends' keys untouched
    assert out.postprocess.edge_enhancement == pytest.approx(0.3)
    assert list(out.timesteps) == [250, 100] and out.num_steps == 2
    assert (out.outscale, out.output.format, out.output.quality) == (2.0, "webp", 80)
    assert out.postprocess.smart_chopping and out.postprocess.min_overlap == pytest.approx(0.2)
    assert config_for(cfg, _settings(cfg, edge_strength=0.9), "realesrgan").postprocess.edge_enhancement == 0.0


@pytest.mark.parametrize("field, value, message", [
    ("chopping_size", 300, "chopping_size"), ("min_overlap", 0.5, "min_overlap"),
    ("max_overlap", 0.3, "max_overlap"), ("outscale", 8, "outscale"), ("format", "gif", "format"),
    ("num_steps", 6, "num_steps"), ("timesteps", "100,200", "descending")])
def test_out_of_range_settings_are_named(cfg, field, value, message):
    with pytest.raises(ValueError, match=message):
        config_for(cfg, _settings(cfg, **{field: value}), "realesrgan")


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
    with Image.open(download) as result:
        assert (result.format, result.size) == ("PNG", (128, 128))
    assert Image.open(before).size == Image.open(after).size == (128, 128)
    assert info.startswith("×4 · realesrgan") and "32×32 → 128×128" in info


def test_upscale_settings_are_applied(client, tmp_path):
    crop(32).save(tmp_path / "crop.png")
    _, download, info = client.predict(handle_file(str(tmp_path / "crop.png")), backend="bicubic", outscale=2,
                                       color_fix="none", api_name="/upscale")
    assert Image.open(download).size == (64, 64)
    assert "bicubic" in info and "color fix none" in info


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
    with pytest.raises(AppError, match="timesteps must be strictly descending"):
        client.predict(handle_file(str(tmp_path / "crop.png")), timesteps="50,100", api_name="/upscale")


def test_batch_folder_reports_each_file_and_resumes(client, work):
    folder = work / "inputs" / "set"
    folder.mkdir()
    crop(32).save(folder / "good.png")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    table, archive, summary = client.predict(folder="set", api_name="/batch")
    rows = table_rows(table)
    assert rows["good.png"] == ("ok", "")
    assert rows["corrupt.jpg"][0] == "error" and "corrupt.jpg: not a readable image" in rows["corrupt.jpg"][1]
    out = work / "outputs" / "set_x4"
    assert Image.open(out / "good.png").size == (128, 128)
    assert sorted(p.name for p in folder.iterdir()) == ["corrupt.jpg", "good.png"]  # inputs untouched
    assert zipfile.ZipFile(archive).namelist() == ["good.png"]
    assert "1 ok" in summary and "1 error" in summary

    table, _, _ = client.predict(folder="set", api_name="/batch")
    assert table_rows(table)["good.png"][0] == "skipped"


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
    table, result_zip, _ = client.predict(files=[handle_file(str(archive))], api_name="/batch")
    assert table_rows(table) == {"pack/sub/a.png": ("ok", "")}
    assert zipfile.ZipFile(result_zip).namelist() == ["pack/sub/a.png"]


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
    out = work / "outputs" / "many_x4"
    job = client.submit(folder="many", api_name="/batch")
    deadline = time.monotonic() + 120
    while not list(out.glob("*.png")):
        assert time.monotonic() < deadline and not job.done(), "the batch never wrote its first result"
        time.sleep(0.05)
    client.predict(api_name="/cancel")
    table, _, summary = job.result(timeout=120)
    statuses = [row[1] for row in table["data"]]
    assert summary.startswith("Cancelled") and "cancelled" in statuses
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(row[0] for row in table["data"] if row[1] == "ok")  # no partial or stray files

    # Rerun on the finished files only (the others removed, to spare the CPU): all are skipped.
    for row in table["data"]:
        if row[1] == "cancelled":
            (folder / row[0]).unlink()
    table, _, _ = client.predict(folder="many", api_name="/batch")
    assert {row[0]: row[1] for row in table["data"]} == {name: "skipped" for name in written}
