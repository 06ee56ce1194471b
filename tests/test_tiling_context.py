"""Context-margin tiling (utils.tiling.chopping.context_grid / context_window) for convolutional backends."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from datapipe.image_io import read_image
from tests.conftest import DATASETS
from tests.custom_models import random_model, save_model
from utils.backends import BACKENDS, load_backend
from utils.config import with_overrides
from utils.settings import SPECS, TILED_BACKENDS
from utils.pipeline.chain import to_tensor
from utils.settings import RunSettings
from utils.tiling.chopping import FEATHER, blend_patches, context_grid, context_window
from utils.tiling.smart_chopping import smart_grid


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.double() - b.double()) ** 2).mean())
    return float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse))


def local_model(radius: int, sf: int):
    """A stand-in network whose output depends on exactly ``radius`` pixels around each input pixel:
    ``radius`` zero-padded 3×3 box filters (as a CNN pads at a tile edge), then nearest ×sf."""
    kernel = torch.full((3, 1, 3, 3), 1 / 9)

    def fn(x):
        for _ in range(radius):
            x = F.conv2d(x, kernel, padding=1, groups=3)
        return F.interpolate(x, scale_factor=sf, mode="nearest")

    return fn


def edge_distance(sf: int):
    """A patch function whose output is each pixel's distance (input px) to the nearest tile edge."""

    def fn(x):
        h, w = x.shape[-2:]
        rows = torch.arange(h * sf, dtype=torch.float64) // sf
        cols = torch.arange(w * sf, dtype=torch.float64) // sf
        dist = torch.minimum(torch.minimum(rows, h - 1 - rows)[:, None], torch.minimum(cols, w - 1 - cols)[None])
        return dist.expand(x.shape[0], 1, -1, -1).to(x.dtype)

    return fn


@pytest.mark.parametrize("length,core,margin,size,starts", [
    (100, 64, 16, 100, [0]),              # fits one tile of core + 2·margin + feather
    (200, 64, 16, 91, [0, 55, 109]),      # 3 tiles; neighbours overlap by 2·16 + 4 = 36 (last: 37)
    (400, 256, 32, 234, [0, 166]),        # balanced: two tiles of 234, not 324 + a sliver of 144
])
def test_context_grid_known_values(length, core, margin, size, starts):
    grid = context_grid(length, 10, core, margin)
    assert grid.height == size and sorted({r for r, _ in grid.starts}) == starts
    assert size <= core + 2 * margin + FEATHER
    assert all(b - a <= size - (2 * margin + FEATHER) for a, b in zip(starts, starts[1:]))


@pytest.mark.parametrize("h,w,core,margin", [(70, 90, 16, 5), (33, 130, 24, 8), (64, 64, 8, 12)])
@pytest.mark.parametrize("sf", [1, 4])
def test_every_output_pixel_has_the_margin_of_context(h, w, core, margin, sf):
    """Blending the distance-to-tile-edge map: each output pixel only comes from tiles where it lies at
    least ``margin`` px from every tile edge, except where the image border is nearer."""
    grid = context_grid(h, w, core, margin)
    assert len(grid) > 1
    out = blend_patches(torch.zeros(1, 3, h, w), edge_distance(sf), grid, sf,
                        window=context_window(grid, h, w, margin, sf))
    rows = torch.arange(h * sf, dtype=torch.float64) // sf
    cols = torch.arange(w * sf, dtype=torch.float64) // sf
    border = torch.minimum(torch.minimum(rows, h - 1 - rows)[:, None], torch.minimum(cols, w - 1 - cols)[None])
    need = border.clamp(max=margin).float()
    assert (out[0, 0] >= need - 1e-9).all()
    # The check bites: without margins, pixels next to inner tile edges come in.
    loose = blend_patches(torch.zeros(1, 3, h, w), edge_distance(sf), grid, sf,
                          window=context_window(grid, h, w, 0, sf))
    assert (loose[0, 0] < need - 1).any()


@pytest.mark.parametrize("radius", [3, 6])
def test_tiles_equal_the_whole_image_once_the_margin_covers_the_receptive_field(radius):
    x = torch.rand(2, 3, 90, 110)
    fn = local_model(radius, 2)
    whole = fn(x)
    for margin, exact in ((radius, True), (radius - 2, False)):
        grid = context_grid(90, 110, 24, margin)
        tiled = blend_patches(x, fn, grid, 2, batch_size=3, window=context_window(grid, 90, 110, margin, 2))
        error = (tiled - whole).abs().max().item()
        assert (error < 1e-6) == exact, (margin, error)


def test_smart_grid_with_context_window_covers_and_keeps_half_the_overlap():
    """Smart chopping's grid overlaps less near flat areas: each inner side then keeps half of the
    overlap as its margin, so every pixel is still covered and taken from well inside a tile."""
    torch.manual_seed(0)
    image = torch.rand(1, 3, 120, 150) * torch.linspace(0, 1, 150)  # detail grows to the right
    margin, pch = 12, 40
    grid = smart_grid(image, pch, 0.25, 0.5)
    assert len(grid) > 4
    out = blend_patches(torch.zeros(1, 3, 120, 150), edge_distance(1), grid, 1,
                        window=context_window(grid, 120, 150, margin, 1))
    assert torch.isfinite(out).all()
    rows = torch.arange(120, dtype=torch.float64)
    cols = torch.arange(150, dtype=torch.float64)
    border = torch.minimum(torch.minimum(rows, 119 - rows)[:, None], torch.minimum(cols, 149 - cols)[None])
    least_margin = min(margin, int(0.25 * pch) // 2)
    assert (out[0, 0] >= border.clamp(max=least_margin).float() - 1e-9).all()


@pytest.fixture(scope="module")
def baboon() -> np.ndarray:
    return read_image(DATASETS / "Set14" / "baboon.png").rgb


def tiled_vs_whole(cfg, name, lr, core, **overrides):
    cfg = with_overrides(cfg, {"color_fix": "none", **overrides})
    backend = load_backend(name, cfg)
    settings = RunSettings.from_config(cfg, name).replace(tile_size=core)
    tiles = []
    tiled = backend.upscale(lr, settings, progress=lambda done, total: tiles.append(total))
    whole = backend._patch(lr, settings.native_scale())
    return psnr(tiled, whole), tiles[-1]


@pytest.mark.parametrize("name", ["span", "realesrgan-anime", "waifu2x"])
def test_fast_models_tile_like_the_whole_image(cfg, baboon, name):
    """64-px tiles at the default margin on the most textured Set14 image: these networks' receptive
    fields fit in the margin, so tiles reproduce the whole-image forward (float rounding aside)."""
    value, tiles = tiled_vs_whole(cfg, name, to_tensor(baboon[:160, :200]), 64)
    assert tiles >= 6 and value > 100


@pytest.mark.parametrize("runtime", ["ncnn", "openvino"])
def test_realesrgan_x4plus_64px_tiles_reach_45db(cfg, baboon, runtime):
    """x4plus's receptive field is far wider than any margin; 40 px of context still keep 64-px tiles
    within 45 dB of one whole-image forward (the old 32-px-overlap Gaussian grid: ~30 dB), on ncnn and
    on OpenVINO at this CPU's precision (bfloat16 where it has BF16)."""
    lr = to_tensor(baboon[200:352, 200:352])  # 152², the smallest image that takes 2×2 such tiles
    value, tiles = tiled_vs_whole(cfg, "realesrgan", lr, 64, runtime=runtime)
    assert tiles == 4 and value >= 45


@pytest.mark.parametrize("name", TILED_BACKENDS)
def test_default_settings_compute_at_most_1_4x_the_whole_image(cfg, name, tmp_path):
    """Over image sizes from one tile to 2048², default tiles cost ≤ 1.4× the pixels of one forward
    (custom: with its commonest architecture, ESRGAN, as most community models are)."""
    if name == "custom":
        path = save_model(random_model("ESRGAN"), tmp_path / "4x-community.pth")
        cfg = with_overrides(cfg, {"custom.model_path": str(path)})
    settings = RunSettings.from_config(cfg, name).for_input(2048, 2048)
    margin = settings.tile_margin
    worst = 0.0
    for side in range(64, 2049, 8):
        grid = context_grid(side, side, settings.tile_size, margin)
        worst = max(worst, len(grid) * grid.height * grid.width / side ** 2)
    assert worst <= 1.4, f"{name}: {worst:.2f}×"


def test_smart_chopping_still_tiles_with_context(cfg, baboon):
    """Smart chopping places its own tiles (complexity-driven overlap, attention-weighted) and keeps the
    context margins where its overlaps allow: SPAN stays within 45 dB of the whole image."""
    lr = to_tensor(baboon[:160, :200])
    margin = SPECS["span"].context_margin
    smart = smart_grid(lr, 32 + 2 * margin + FEATHER, cfg.postprocess.min_overlap, cfg.postprocess.max_overlap)
    assert len(smart) != len(context_grid(160, 200, 32, margin))
    value, tiles = tiled_vs_whole(cfg, "span", lr, 32, **{"postprocess.smart_chopping": True})
    assert tiles == len(smart) and value >= 45
