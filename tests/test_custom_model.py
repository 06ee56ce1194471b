"""Users' own model files: detected through spandrel, read as tensors only, refused with one clear error."""
import pytest
import torch
from spandrel import ImageModelDescriptor
from spandrel.architectures.GFPGAN import GFPGANArch

from tests.custom_models import ARCHITECTURES, RunsCode, random_model, save_model
from utils.backends import custom_model
from utils.backends.custom_model import ModelFileError, load_custom_model

DETECTED = {"ESRGAN": "ESRGAN", "Compact": "Compact", "SPAN": "SPAN", "SwinIR": "SwinIR", "Compact-x1": "Compact",
            "Compact-x8": "Compact"}


def one_clear_error(path, match: str) -> str:
    """The single ModelFileError loading ``path`` raises: names the file, matches, chains nothing."""
    with pytest.raises(ModelFileError, match=match) as info:
        load_custom_model(path)
    assert path.name in str(info.value)
    assert info.value.__cause__ is None and (info.value.__context__ is None or info.value.__suppress_context__)
    return str(info.value)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_random_weight_files_are_detected(tmp_path, arch, suffix):
    model = random_model(arch)
    loaded = load_custom_model(save_model(model, tmp_path / f"{arch}{suffix}"))
    assert loaded.descriptor.architecture.id == DETECTED[arch]
    assert loaded.scale == ARCHITECTURES[arch][1]
    assert loaded.parameters == sum(p.numel() for p in model.parameters())
    assert not loaded.descriptor.model.training
    x = torch.rand(1, 3, 20, 24)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.descriptor(x), model(x).clamp(0, 1))  # the file's weights, not others


def test_params_ema_checkpoint_and_pt_suffix(tmp_path):
    state = random_model("Compact").state_dict()
    path = tmp_path / "net_g.pt"  # BasicSR training output: the EMA weights inside a dict
    torch.save({"params": state, "params_ema": {k: v + 1 for k, v in state.items()}}, path)
    loaded = load_custom_model(path)
    assert torch.equal(loaded.descriptor.model.state_dict()["body.0.bias"], state["body.0.bias"] + 1)


@pytest.mark.parametrize("suffix", [".pth", ".pt", ".ckpt"])
def test_code_running_pickle_is_refused_and_nothing_runs(tmp_path, suffix):
    marker = tmp_path / "pwned"
    path = tmp_path / f"evil{suffix}"
    torch.save({"conv.weight": torch.zeros(1), "payload": RunsCode(marker)}, path)
    message = one_clear_error(path, r"refused: it holds Python objects besides tensors .*posix.system")
    assert "nothing in it was run" in message
    assert not marker.exists()


def test_truncated_text_and_unknown_files_each_give_one_error(tmp_path):
    good = save_model(random_model("Compact"), tmp_path / "good.pth")
    for name in ("cut.pth", "cut.safetensors"):
        source = good if name.endswith(".pth") else save_model(random_model("Compact"), tmp_path / "g.safetensors")
        (tmp_path / name).write_bytes(source.read_bytes()[: source.stat().st_size // 2])
        one_clear_error(tmp_path / name, "cannot be read: truncated, damaged or not a model file")
    text = tmp_path / "notes.pth"
    text.write_text("these are not weights\n")
    one_clear_error(text, "not a PyTorch model file, or a damaged one")
    unknown = tmp_path / "mystery.safetensors"
    save_model(torch.nn.Linear(4, 4), unknown)
    one_clear_error(unknown, r"unknown architecture: .* 2 tensors \(first keys: bias, weight\)")
    one_clear_error(tmp_path / "model.onnx", r"not a model file this program reads; use one of .pth")
    one_clear_error(tmp_path / "missing.pth", "model file not found")


def fake_detection(monkeypatch, **descriptor_args):
    """Make spandrel 'detect' a tiny ×2 Compact described by ``descriptor_args``."""
    model = random_model("Compact")
    args = dict(architecture=custom_model.MAIN_REGISTRY.get("Compact").architecture, purpose="SR", tags=[],
                supports_half=True, supports_bfloat16=True, scale=2, input_channels=3, output_channels=3)
    args.update(descriptor_args)
    descriptor = ImageModelDescriptor(model, model.state_dict(), **args)
    monkeypatch.setattr(custom_model.MAIN_REGISTRY, "load", lambda state: descriptor)


def test_face_restoration_model_is_refused(tmp_path, monkeypatch):
    fake_detection(monkeypatch, architecture=GFPGANArch(), purpose="FaceSR", scale=1)
    one_clear_error(save_model(random_model("Compact"), tmp_path / "GFPGANv1.4.pth"),
                    "a GFPGAN model for face restoration, which needs face detection and alignment")


def test_model_whose_output_is_not_the_declared_image_is_refused(tmp_path, monkeypatch):
    fake_detection(monkeypatch, scale=4)  # the network makes ×2
    one_clear_error(save_model(random_model("Compact"), tmp_path / "liar.pth"),
                    r"output on a 16×17 test image has shape \(1, 3, 32, 34\), not \(1, 3, 64, 68\); refused")
