"""NIQE: the MATLAB-style imresize by hand, the whole metric against BasicSR's own code (in double
precision) on all of Set14 and against MATLAB's published value, its ordering on Set14, and the
parameter file's checks."""
import math
import sys
import tarfile
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from utils.evaluation import niqe as niqe_mod
from utils.evaluation.metrics import psnr_y
from utils.evaluation.niqe import ImageTooSmall, cubic, imresize, load_params, niqe, resize_matrix

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
SET14 = sorted((DATASETS / "Set14").glob("*.png"))
# BasicSR in double precision and ours differ by float64 rounding only (measured ≤ 2e-13 on Set14).
BASICSR_TOLERANCE = 1e-5
# BasicSR's calculate_niqe docstring: MATLAB R2021a's niqe on baboon.png gives 5.72957338.
MATLAB_BABOON = 5.72957338


def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_cubic_kernel_values():
    # Keys' kernel with a = -0.5 at hand-evaluated points: 1.5|x|³ - 2.5|x|² + 1 and -0.5|x|³ + 2.5|x|² - 4|x| + 2.
    x = np.array([0.0, 0.25, 0.5, -0.75, 1.0, 1.25, -1.5, 1.75, 2.0, 2.5])
    expected = [1.0, 0.8671875, 0.5625, 0.2265625, 0.0, -0.0703125, -0.0625, -0.0234375, 0.0, 0.0]
    np.testing.assert_array_equal(cubic(x), expected)


def test_half_scale_interior_weights_by_hand():
    # Output j of a halving is centred on input 2j + 0.5 (0-based) with the kernel stretched ×2:
    # weights 0.5·cubic(d/2) at distances ±0.5, ±1.5, ±2.5, ±3.5 = [-3, -9, 29, 111, 111, 29, -9, -3] / 256.
    m = resize_matrix(16, 8, 0.5)
    np.testing.assert_array_equal(m[3, 3:11], np.array([-3, -9, 29, 111, 111, 29, -9, -3]) / 256)
    assert np.count_nonzero(m[3]) == 8
    np.testing.assert_allclose(m.sum(axis=1), 1.0, rtol=0, atol=1e-15)


def test_half_scale_with_symmetric_borders_by_hand():
    # [1, 2, 3, 4] -> 2 pixels; the taps -3..4 around 0.5 mirror onto [2, 1, 0, 0 | 1, 2, 3, 3], so
    # out0 = (140·a0 + 102·a1 + 26·a2 - 12·a3) / 256 and out1 its mirror image.
    column = np.array([[1.0], [2.0], [3.0], [4.0]])
    np.testing.assert_allclose(imresize(column, 0.5), [[374 / 256], [906 / 256]], rtol=0, atol=1e-15)


def test_upscaling_reproduces_a_ramp_and_its_border_weights():
    ramp = np.arange(10, dtype=np.float64)[:, None]
    out = imresize(ramp, 2.0)[:, 0]
    # Output i (1-based) sits at input i/2 + 1/4; a cubic kernel with a = -0.5 reproduces linear data.
    centres = np.arange(1, 21) / 2 + 0.25 - 1
    np.testing.assert_allclose(out[3:17], centres[3:17], rtol=0, atol=1e-12)
    # Output 2 (1-based) at 1.25: weights cubic(1.25), cubic(0.25), cubic(0.75), cubic(1.75) on inputs
    # 0 (mirrored to 1), 1, 2, 3, i.e. 204/256 · a1 + 58/256 · a2 - 6/256 · a3.
    np.testing.assert_allclose(resize_matrix(10, 20, 2.0)[1, :4], np.array([204, 58, -6, 0]) / 256, atol=1e-15)


def test_set5_bicubic_x4_reproduces_the_published_matlab_psnr():
    # The literature's ×4 bicubic baseline (MATLAB imresize down, then up): Set5 28.42 dB PSNR-Y, 4 px crop.
    psnrs = []
    for path in sorted((DATASETS / "Set5").glob("*.png")):
        hr = _rgb(path)
        psnrs.append(psnr_y(_bicubic_x4(hr), hr[: hr.shape[0] // 4 * 4, : hr.shape[1] // 4 * 4], crop=4))
    assert np.mean(psnrs) == pytest.approx(28.42, abs=0.02)  # measured 28.432


@pytest.mark.parametrize("scale,shape", [(0.5, (17, 13, 3)), (0.25, (40, 33)), (1 / 3, (20, 20)), (2.0, (5, 7))])
def test_constant_image_stays_constant(scale, shape):
    out = imresize(np.full(shape, 137.0), scale)
    assert out.shape[:2] == (math.ceil(shape[0] * scale), math.ceil(shape[1] * scale))
    np.testing.assert_allclose(out, 137.0, rtol=0, atol=1e-11)


# BasicSR's own code, loaded from the verified sdist without installing basicsr.
BASICSR_FILES = {
    "basicsr.utils.color_util": "basicsr/utils/color_util.py",
    "basicsr.utils.matlab_functions": "basicsr/utils/matlab_functions.py",
    "basicsr.metrics.metric_util": "basicsr/metrics/metric_util.py",
    "basicsr.metrics.niqe": "basicsr/metrics/niqe.py",
}
# Run in double precision, as MATLAB's niqe is. BasicSR casts to float32, and its float32 moments move
# the AGGD grid search and leave ~1e-5 residues on flat areas: unmodified, it differs from itself in
# double by up to 0.30 (face.png) and from us by up to 4.5e-3 (ppt3.png), from us in double by ≤ 2e-13.
BASICSR_IN_DOUBLE = [("np.float32", "np.float64"), ("torch.FloatTensor(", "torch.DoubleTensor("),
                     (".float()", ".double()"),
                     ("torch.linspace(1, out_length, out_length)",
                      "torch.linspace(1, out_length, out_length, dtype=torch.float64)")]
# Flat neighbourhoods have a deviation of exactly 0; in floating point it is a residue of either sign
# that BasicSR (and MATLAB) leave in. Zeroed the same way as ours, so that residue signs, which depend on
# the order of float operations, do not decide the comparison (test_flat_area_bound_is_not_tuned).
BASICSR_FLAT_ZERO = ("img_nomalized = (img - mu) / (sigma + 1)",
                     "dev = img - mu; dev[np.abs(dev) < ROUNDING_NOISE] = 0; img_nomalized = dev / (sigma + 1)")


@pytest.fixture(scope="session")
def basicsr_sdist() -> Path:
    """The verified basicsr 1.4.2 sdist that `make setup` keeps in weights/ (tests never download it)."""
    sdist = niqe_mod.SDIST_PATH
    if not sdist.is_file():
        pytest.skip(f"{sdist} is missing: `make setup` (python -m utils.evaluation.niqe) downloads it; "
                    "tests never download")
    niqe_mod.verify_file(sdist, niqe_mod.SDIST_SHA256, niqe_mod.SDIST_SIZE, "the basicsr sdist")
    return sdist


@pytest.fixture(scope="session")
def basicsr(basicsr_sdist, tmp_path_factory) -> types.SimpleNamespace:
    """BasicSR's calculate_niqe and imresize in double precision, with stubs for the package modules
    their imports name."""
    root = tmp_path_factory.mktemp("basicsr")
    with tarfile.open(basicsr_sdist) as tar:
        for rel in [*BASICSR_FILES.values(), "basicsr/metrics/niqe_pris_params.npz"]:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(tar.extractfile(f"basicsr-1.4.2/{rel}").read())
    registry = types.ModuleType("basicsr.utils.registry")
    registry.METRIC_REGISTRY = types.SimpleNamespace(register=lambda: (lambda fn: fn))
    stubs = {name: types.ModuleType(name) for name in ("basicsr", "basicsr.utils", "basicsr.metrics")}
    stubs["basicsr.utils.registry"] = registry
    saved = {name: sys.modules.get(name) for name in [*stubs, *BASICSR_FILES]}
    sys.modules.update(stubs)
    loaded, edits = {}, [*BASICSR_IN_DOUBLE, BASICSR_FLAT_ZERO]
    unmatched = {old for old, _ in edits}
    try:
        for name, rel in BASICSR_FILES.items():
            module = types.ModuleType(name)
            module.__file__ = str(root / rel)  # calculate_niqe reads niqe_pris_params.npz beside its file
            module.ROUNDING_NOISE = niqe_mod.ROUNDING_NOISE
            sys.modules[name] = module
            source = (root / rel).read_text()
            for old, new in edits:
                if old in source:
                    unmatched.discard(old)
                    source = source.replace(old, new)
            exec(compile(source, module.__file__, "exec"), module.__dict__)
            loaded[name] = module
            if name == "basicsr.utils.color_util":  # what basicsr/utils/__init__.py re-exports for metric_util
                stubs["basicsr.utils"].bgr2ycbcr = module.bgr2ycbcr
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    assert not unmatched, f"BasicSR's code has none of {unmatched}: the edits above no longer apply"
    return types.SimpleNamespace(calculate_niqe=loaded["basicsr.metrics.niqe"].calculate_niqe,
                                 imresize=loaded["basicsr.utils.matlab_functions"].imresize)


def matlab_luma(rgb: np.ndarray) -> np.ndarray:
    """MATLAB's uint8 rgb2ycbcr Y in exact integer arithmetic: 16 + (65.481 R + 128.553 G + 24.966 B) / 255,
    ties rounded up (MATLAB rounds half away from zero; BasicSR's np.round would take the even one,
    which changes 6 pixels of monarch.png and 1 of pepper.png)."""
    r, g, b = (rgb[..., i].astype(np.int64) for i in range(3))
    return ((4_080_000 + 65_481 * r + 128_553 * g + 24_966 * b + 127_500) // 255_000).astype(np.float64)


@pytest.mark.parametrize("scale,shape", [(0.5, (37, 29)), (0.5, (20, 31, 3)), (0.25, (40, 44)), (0.75, (11, 13)),
                                         (2.0, (9, 7))])
def test_imresize_matches_basicsr(basicsr, scale, shape):
    x = np.random.default_rng(1).random(shape)
    theirs = basicsr.imresize(x, scale)
    ours = imresize(x, scale)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)


def _bicubic_x4(img: np.ndarray) -> np.ndarray:
    """H×W×3 uint8 -> ×1/4 then ×4 MATLAB bicubic, back to uint8 (H, W cropped to multiples of 4)."""
    img = img[: img.shape[0] // 4 * 4, : img.shape[1] // 4 * 4].astype(np.float64)
    return np.clip(np.round(imresize(imresize(img, 0.25), 4.0)), 0, 255).astype(np.uint8)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # BasicSR's fits average empty selections
@pytest.mark.parametrize("crop", [0, 4])
@pytest.mark.parametrize("path", SET14, ids=lambda p: p.name)
def test_niqe_matches_basicsr_on_set14(basicsr, path, crop):
    img = _rgb(path)
    theirs = basicsr.calculate_niqe(matlab_luma(img), crop, input_order="HW")
    assert niqe(img, crop_border=crop) == pytest.approx(theirs, abs=BASICSR_TOLERANCE)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_degraded_and_gray_inputs_match_basicsr(basicsr):
    degraded = _bicubic_x4(_rgb(DATASETS / "Set14" / "comic.png"))
    assert niqe(degraded, crop_border=4) == pytest.approx(
        basicsr.calculate_niqe(matlab_luma(degraded), 4, input_order="HW"), abs=BASICSR_TOLERANCE)
    gray = np.asarray(Image.open(DATASETS / "Set14" / "bridge.png").convert("L"))
    assert niqe(gray) == pytest.approx(basicsr.calculate_niqe(gray, 0, input_order="HW"), abs=BASICSR_TOLERANCE)


@pytest.mark.parametrize("name", ["face.png", "foreman.png", "ppt3.png"])  # the most flat area
def test_flat_area_bound_is_not_tuned(monkeypatch, name):
    """Any bound from 1e-12 to 1e-9 gives the same NIQE; none leaves the residues in and moves it."""
    assert 1e-12 < niqe_mod.ROUNDING_NOISE < 1e-9
    img = _rgb(DATASETS / "Set14" / name)
    values = []
    for bound in (1e-12, 1e-9, 0.0):
        monkeypatch.setattr(niqe_mod, "ROUNDING_NOISE", bound)
        values.append(niqe(img))
    assert values[0] == pytest.approx(values[1], abs=1e-12)
    assert abs(values[2] - values[0]) > 1e-3


def test_baboon_matches_matlab():
    assert niqe(_rgb(DATASETS / "Set14" / "baboon.png")) == pytest.approx(MATLAB_BABOON, abs=1e-5)


def test_float_input_equals_uint8_input():
    img = _rgb(DATASETS / "Set5" / "butterfly.png")
    assert niqe(img.astype(np.float32) / 255) == niqe(img)


def test_set14_hr_is_more_natural_than_bicubic():
    images = SET14
    assert len(images) == 14
    hr = [niqe(_rgb(p), crop_border=4) for p in images]
    bicubic = [niqe(_bicubic_x4(_rgb(p)), crop_border=4) for p in images]
    print(f"Set14 NIQE: HR mean {np.mean(hr):.4f}, bicubic ×4 mean {np.mean(bicubic):.4f}")
    assert np.mean(hr) < np.mean(bicubic) - 1.0


def test_too_small_images_are_refused():
    rng = np.random.default_rng(0)
    assert math.isfinite(niqe(rng.integers(0, 256, (96, 192), dtype=np.uint8)))
    with pytest.raises(ImageTooSmall, match="two 96×96 blocks"):
        niqe(rng.integers(0, 256, (96, 191, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="190×190 after cropping 5 px"):  # one block
        niqe(rng.integers(0, 256, (200, 200, 3), dtype=np.uint8), crop_border=5)


def test_flat_image_has_no_defined_niqe():
    assert math.isnan(niqe(np.full((192, 192, 3), 90, np.uint8)))


def test_tampered_parameters_are_refused(tmp_path):
    data = bytearray(niqe_mod.PARAMS_PATH.read_bytes())
    data[-100] ^= 1
    bad = tmp_path / "niqe_pris_params.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        load_params(bad)
    bad.write_bytes(bytes(data[:-1]))
    with pytest.raises(ValueError, match="11850 bytes"):
        load_params(bad)


def test_parameters_are_the_live_model():
    model = load_params()
    assert model.mu.shape == (36,) and model.cov.shape == (36, 36) and model.window.shape == (7, 7)
    np.testing.assert_allclose(model.cov, model.cov.T, rtol=0, atol=1e-12)
    assert model.window.sum() == pytest.approx(1.0, abs=1e-12)
    # MATLAB's fspecial('gaussian', 7, 7/6): centre over corner is exp((3² + 3²) / (2 · (7/6)²)).
    assert model.window[3, 3] / model.window[0, 0] == pytest.approx(math.exp(18 / (2 * (7 / 6) ** 2)), rel=1e-9)


def test_missing_parameters_name_the_fetch_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m utils.evaluation.niqe"):
        load_params(tmp_path / "absent.npz")


def test_fetch_extracts_and_then_stays_offline(tmp_path, basicsr_sdist, monkeypatch):
    dest = tmp_path / "weights" / "niqe_pris_params.npz"
    assert "extracted" in niqe_mod.fetch_params(dest, sdist=basicsr_sdist)
    assert dest.read_bytes() == niqe_mod.PARAMS_PATH.read_bytes()
    monkeypatch.setattr(niqe_mod, "download_sdist", lambda *a: pytest.fail("a verified file was fetched again"))
    assert "already present" in niqe_mod.fetch_params(dest)


def test_tampered_sdist_is_refused(tmp_path, basicsr_sdist):
    data = bytearray(basicsr_sdist.read_bytes())
    data[1000] ^= 1
    bad = tmp_path / niqe_mod.SDIST_NAME
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="refusing"):
        niqe_mod.extract_params(bad, tmp_path / "out.npz")
    assert not (tmp_path / "out.npz").exists()
