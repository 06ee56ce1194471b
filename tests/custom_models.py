"""Tiny random-weight model files made with spandrel's own architecture classes, for the custom-model tests."""
import os
from pathlib import Path

import torch
from safetensors.torch import save_file
from spandrel.architectures.Compact import Compact
from spandrel.architectures.ESRGAN import ESRGAN
from spandrel.architectures.SPAN import SPAN
from spandrel.architectures.SwinIR import SwinIR

# name -> (factory, native scale)
ARCHITECTURES = {
    "ESRGAN": (lambda: ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=4), 4),
    "Compact": (lambda: Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=4, upscale=2), 2),
    "SPAN": (lambda: SPAN(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=2), 2),
    "SwinIR": (lambda: SwinIR(img_size=16, embed_dim=12, depths=[2], num_heads=[2], window_size=4, mlp_ratio=2,
                              upscale=3, upsampler="pixelshuffledirect"), 3),
    "Compact-x1": (lambda: Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=1), 1),
    "Compact-x8": (lambda: Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=8), 8),
}


def random_model(arch: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = ARCHITECTURES[arch][0]().eval()
    # Small weights keep random networks' outputs mostly inside [0, 1], so comparisons see values, not clamps.
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim > 1:
                p.mul_(0.5)
    return model


def save_model(model: torch.nn.Module, path: Path) -> Path:
    """``model``'s state dict as ``path`` (.safetensors or a pickled .pth / .pt / .ckpt)."""
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


class RunsCode:
    """Unpickling this calls os.system: what a malicious model file does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)
