"""The studio's models folder without a server: the picker, the model note, tiling defaults, estimates."""
import gradio as gr
import pytest

from tests.custom_models import random_model, save_model
from utils.settings import SPECS
from utils.studio.launch import StudioOptions, model_upload_allowed
from utils.studio.service import Studio
from utils.studio.settings import Settings
from utils.studio.ui import Page, backend_choices, settings_panel
from utils.studio.user_models import list_models, model_file
from utils.studio.paths import PathRefused


@pytest.fixture
def studio(cfg, tmp_path):
    (tmp_path / "tmp").mkdir()
    (tmp_path / "models").mkdir()
    return Studio(cfg, "realesrgan", tmp_path / "in", tmp_path / "out", tmp_path / "tmp",
                  models_dir=tmp_path / "models")


def test_folder_files_join_the_picker_with_what_they_are(studio, cfg):
    folder = studio.models_dir
    model = random_model("SPAN")
    save_model(model, folder / "2x-mine.safetensors")
    (folder / "broken.pth").write_bytes(b"\x80\x02}q\x00")  # a pickle cut short
    (folder / "readme.txt").write_text("not a model")
    entries = list_models(folder)
    assert [e.file for e in entries] == ["2x-mine.safetensors", "broken.pth"]
    count = sum(p.numel() for p in model.parameters())
    size = (folder / "2x-mine.safetensors").stat().st_size
    assert entries[0].label == (f"Your model: 2x-mine.safetensors — SPAN ×2, {count / 1e3:.1f} k parameters, "
                                f"{size / 1e6:.1f} MB")
    assert not entries[1].model and "broken.pth" in entries[1].error
    choices = backend_choices(entries)
    assert ("Your model: broken.pth — cannot be used", "custom:broken.pth") in choices
    assert "custom" not in [value for _, value in choices]  # "custom" alone names no file

    with gr.Blocks():
        controls, _, _ = settings_panel(Settings.defaults(cfg, "realesrgan"), entries)
    page = Page(studio, controls)
    note, *controls_view = page.backend_view("custom:2x-mine.safetensors")
    assert note.startswith("Your model 2x-mine.safetensors: SPAN ×2")
    assert page.picked_backend("custom:2x-mine.safetensors")[:2] == [SPECS["custom"].tile_size, 22]  # SPAN's margin
    text = studio.estimate(None, vars(Settings.defaults(cfg, "realesrgan").replace(
        backend="custom:2x-mine.safetensors", outscale=2, overlap=None, tile_size=None).applicable()))
    assert text.startswith("≈ 4 tiles (tile size 448 px, overlap 22 px)")  # SPAN's margin, from the file


def test_only_plain_names_inside_the_folder(studio, tmp_path):
    outside = save_model(random_model("Compact"), tmp_path / "outside.pth")
    (studio.models_dir / "link.pth").symlink_to(outside)
    for value in ("custom:../outside.pth", "custom:sub/x.pth", "custom:", "custom:link.pth"):
        with pytest.raises(PathRefused):
            model_file(studio.models_dir, value)


def test_model_upload_is_off_by_default_only_where_others_reach_the_studio():
    assert model_upload_allowed(StudioOptions())
    assert not model_upload_allowed(StudioOptions(share=True))
    assert not model_upload_allowed(StudioOptions(server_name="0.0.0.0"))
    assert model_upload_allowed(StudioOptions(server_name="0.0.0.0", allow_model_upload=True))
    assert not model_upload_allowed(StudioOptions(allow_model_upload=False))


def test_upload_refused_when_off(studio, tmp_path):
    with pytest.raises(gr.Error, match="model upload is off on this server"):
        studio.add_model(str(save_model(random_model("Compact"), tmp_path / "m.pth")))
    assert list(studio.models_dir.iterdir()) == []


def test_a_page_load_lists_a_file_dropped_in_since(studio, cfg):
    with gr.Blocks():
        controls, _, _ = settings_panel(Settings.defaults(cfg, "realesrgan"), list_models(studio.models_dir))
    page = Page(studio, controls)
    save_model(random_model("Compact"), studio.models_dir / "new.pth")
    *values, listing = page.load_settings(None)
    picker = values[page.keys.index("backend")]
    assert ("custom:new.pth" in [value for _, value in picker["choices"]]) and picker["value"] == "realesrgan"
    assert "**new.pth**: RealESRGAN Compact ×2" in listing
