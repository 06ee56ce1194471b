"""A corpus of awkward and broken image files, generated on demand (nothing binary is committed)."""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

# name -> expected outcome: ("ok", output size or None) or ("error", text in the message)
EXPECTED = {
    "zero.png": ("error", "the file is empty (0 bytes)"),
    "truncated.png": ("error", "the file is truncated"),
    "truncated.jpg": ("error", "the file is truncated"),
    "text.png": ("error", "not a readable image"),
    "bomb.png": ("error", "900,000,000 pixels exceeds the limit"),
    "one_pixel.png": ("ok", (4, 4)),
    "two_by_three.png": ("ok", (8, 12)),
    "deep16.png": ("ok", (32, 24)),
    "rgba.png": ("ok", (32, 24)),
    "gray_alpha.png": ("ok", (32, 24)),
    "palette.png": ("ok", (32, 24)),
    "cmyk.jpg": ("ok", (32, 24)),
    "animated.gif": ("ok", (32, 24)),
    "rotated.jpg": ("ok", (24, 32)),  # stored 8×6 with orientation 6: upright it is 6 wide, 8 tall
    "spaced näme ü.png": ("ok", (32, 24)),
}


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A few hundred bytes that claim a gigantic image."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (width * 3 + 1) * 4)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", rows) + _png_chunk(b"IEND", b"")


def make_corpus(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    noise = lambda h, w: rng.integers(0, 256, (h, w, 3), dtype=np.uint8)  # noqa: E731
    (folder / "zero.png").write_bytes(b"")
    for ext, fmt in (("png", "PNG"), ("jpg", "JPEG")):
        buf = io.BytesIO()
        Image.fromarray(noise(40, 40)).save(buf, fmt)
        (folder / f"truncated.{ext}").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (folder / "text.png").write_text("this is not an image\n")
    (folder / "bomb.png").write_bytes(bomb_png())
    Image.new("RGB", (1, 1), (200, 10, 10)).save(folder / "one_pixel.png")
    Image.fromarray(noise(3, 2)).save(folder / "two_by_three.png")
    cv2.imwrite(str(folder / "deep16.png"), rng.integers(0, 65536, (6, 8, 3)).astype(np.uint16))
    Image.fromarray(np.dstack([noise(6, 8), np.full((6, 8), 128, np.uint8)]), "RGBA").save(folder / "rgba.png")
    Image.new("LA", (8, 6), (100, 50)).save(folder / "gray_alpha.png")
    Image.fromarray(noise(6, 8)).convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "palette.png")
    Image.new("CMYK", (8, 6), (0, 255, 255, 0)).save(folder / "cmyk.jpg")
    frames = [Image.new("RGB", (8, 6), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=100)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(noise(6, 8)).save(folder / "rotated.jpg", exif=exif.tobytes())
    Image.fromarray(noise(6, 8)).save(folder / "spaced näme ü.png")
    return folder
