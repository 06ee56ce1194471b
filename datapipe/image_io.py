"""Reading and writing images without losing what users care about.

Pixels come in as float32 RGB in [0, 1] whatever the file held (8/16-bit, grayscale, palette, CMYK,
alpha); what is needed to write the result back faithfully travels alongside: the alpha channel,
whether the source was grayscale, its bit depth, the ICC profile and the EXIF block (orientation is
applied on reading and reset to "normal" on writing). Outputs are written atomically.
"""
from __future__ import annotations

import io
import os
import re
import socket
import struct
import tempfile
import time
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Optional

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
WRITE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP",
                 ".tif": "TIFF", ".tiff": "TIFF"}
EXIF_ORIENTATION = 0x0112
PART_SUFFIX = ".part"
# A temp file's name: .<target>.<mkstemp's random letters>@<writer's host>.<writer's PID>.part. Host
# names never hold "@", and mkstemp's letters neither "@" nor ".", so the name parses unambiguously.
PART_NAME = re.compile(r"\..+\.[a-z0-9_]+@(?P<host>[A-Za-z0-9._-]+)\.(?P<pid>\d+)" + re.escape(PART_SUFFIX))
# Before host names: .<target>.<random>.<PID>.part (the writer's host is unknown).
HOSTLESS_PART_NAME = re.compile(r"\..+\.[a-z0-9_]+\.(?P<pid>\d+)" + re.escape(PART_SUFFIX))
# A part this old is abandoned whoever wrote it: no image takes a day to write.
STALE_PART_SECONDS = 24 * 3600
_UMASK = os.umask(0)
os.umask(_UMASK)


class ImageError(ValueError):
    """A file that cannot be read or written as an image; the message names the file and the reason."""

    def __init__(self, path: os.PathLike | str, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{Path(path).name}: {reason}")


@dataclass
class LoadedImage:
    """An image as the pipeline sees it, plus what is needed to write it back faithfully.

    rgb: H×W×3 float32 in [0, 1] (grayscale sources are replicated to three channels);
    alpha: H×W float32 in [0, 1] or None.
    """

    rgb: np.ndarray
    alpha: Optional[np.ndarray] = None
    grayscale: bool = False
    bit_depth: int = 8
    icc_profile: Optional[bytes] = None
    exif: Optional[bytes] = None
    notes: list[str] = field(default_factory=list)

    @property
    def height(self) -> int:
        return self.rgb.shape[0]

    @property
    def width(self) -> int:
        return self.rgb.shape[1]

    def with_pixels(self, rgb: np.ndarray, alpha: Optional[np.ndarray]) -> "LoadedImage":
        return replace(self, rgb=rgb, alpha=alpha, notes=list(self.notes))


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: os.PathLike | str, recursive: bool = False) -> list[Path]:
    """Image files in ``folder`` (by extension), sorted; symlinked folders are not followed (no loops)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"not a folder: {folder}")
    if recursive:
        found = [Path(root) / name for root, _, names in os.walk(folder) for name in names]
    else:
        found = list(folder.iterdir())
    return sorted(p for p in found if is_image_file(p) and p.is_file())


def image_size(path: os.PathLike | str, max_pixels: Optional[int] = None) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels; a bad file gives the same
    ImageError as :func:`read_image` with the same ``max_pixels``."""
    with _opened(path, max_pixels) as im:
        return im.size


def read_image(path: os.PathLike | str, max_pixels: Optional[int] = None) -> LoadedImage:
    """Decode ``path``; ``max_pixels`` is checked against the header before any pixel is decoded, and
    Pillow's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``) caps it."""
    with _opened(path, max_pixels) as im:
        return _decode(Path(path), im, max_pixels)


@contextmanager
def _opened(path: os.PathLike | str, max_pixels: Optional[int]) -> Iterator[Image.Image]:
    """The image opened by Pillow; any problem with the file (inside the block too) as one ImageError."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(path, "file not found")
    if path.stat().st_size == 0:
        raise ImageError(path, "the file is empty (0 bytes)")
    try:
        with Image.open(path) as im:
            yield im
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(path, _bomb_reason(exc, max_pixels)) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(path, f"not a readable image ({_reason(exc)})") from exc


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if "truncated" in text.lower():
        return "the file is truncated"
    if isinstance(exc, UnidentifiedImageError):
        return "unknown or corrupt image format"
    return text


def _pixel_limit_problem(size: str, pixels: int, max_pixels: Optional[int]) -> Optional[str]:
    """Why an image of ``pixels`` must not be decoded, or None: the project's limit first (the user can raise
    it), then Pillow's bomb guard, which stays in force above a raised project limit."""
    if max_pixels is not None and pixels > max_pixels:
        return f"{size} pixels exceeds the limit of {max_pixels:,} pixels (raise limits.max_input_pixels to allow it)"
    if Image.MAX_IMAGE_PIXELS is not None and pixels > Image.MAX_IMAGE_PIXELS:
        return (f"{size} pixels exceeds Pillow's decompression-bomb limit of {Image.MAX_IMAGE_PIXELS:,} pixels, "
                "which caps limits.max_input_pixels")
    return None


def _bomb_reason(exc: Image.DecompressionBombError, max_pixels: Optional[int]) -> str:
    """Pillow refused the header (over twice its limit) before our own check ran; its message has the count."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    if found is None:  # a Pillow whose wording changed: still one clear line
        return f"refused by Pillow's decompression-bomb guard ({exc})"
    pixels = int(found.group(1))  # over twice Pillow's limit, so a problem is always found
    return _pixel_limit_problem(f"{pixels:,}", pixels, max_pixels)


def _decode(path: Path, im: Image.Image, max_pixels: Optional[int]) -> LoadedImage:
    w, h = im.size
    if w < 1 or h < 1:
        raise ImageError(path, f"invalid size {w}×{h}")
    # Between Pillow's limit and twice it, Pillow only warns; the check below refuses those too.
    problem = _pixel_limit_problem(f"{w}×{h} = {w * h:,}", w * h, max_pixels)
    if problem:
        raise ImageError(path, problem)
    notes = []
    if getattr(im, "n_frames", 1) > 1:
        notes.append(f"{im.format} has {im.n_frames} frames; only the first was used")
    exif = im.getexif()
    orientation = int(exif.get(EXIF_ORIENTATION, 1) or 1)
    icc = im.info.get("icc_profile") or None
    if _is_16bit_color(path, im):
        pixels = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        if pixels is None:
            raise ImageError(path, "OpenCV could not decode this 16-bit image")
        pixels = pixels[..., [2, 1, 0, 3][: pixels.shape[2]]]  # BGR(A) -> RGB(A)
        rgb, alpha = _split_alpha(pixels.astype(np.float32) / 65535.0)
        gray, depth = False, 16
    else:
        im.load()
        rgb, alpha, gray, depth = _from_pil(im)
    rgb, alpha = _orient(rgb, orientation), (None if alpha is None else _orient(alpha, orientation))
    if orientation != 1:
        notes.append(f"EXIF orientation {orientation} applied")
    exif[EXIF_ORIENTATION] = 1
    exif_bytes = exif.tobytes() if len(exif) > 1 or orientation != 1 else None
    return LoadedImage(np.ascontiguousarray(rgb, np.float32), alpha, gray, depth, icc, exif_bytes, notes)


def _is_16bit_color(path: Path, im: Image.Image) -> bool:
    """PIL reads 16-bit RGB(A) PNG/TIFF as 8-bit; those go through OpenCV to keep their precision."""
    if im.format == "PNG":
        with open(path, "rb") as f:
            header = f.read(26)
        bit_depth, colour_type = header[24], header[25]
        return bit_depth == 16 and colour_type in (2, 6)  # truecolour, truecolour + alpha
    if im.format == "TIFF":
        bits = im.tag_v2.get(258, (8,))
        bits = bits if isinstance(bits, tuple) else (bits,)
        return len(bits) >= 3 and max(bits) == 16
    return False


def _split_alpha(pixels: np.ndarray) -> tuple[np.ndarray, Optional[np.ndarray]]:
    if pixels.shape[2] == 4:
        return pixels[..., :3], pixels[..., 3]
    return pixels, None


def _from_pil(im: Image.Image) -> tuple[np.ndarray, Optional[np.ndarray], bool, int]:
    """(rgb, alpha, grayscale, bit depth) from a decoded PIL image of any mode."""
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(im, dtype=np.float64)
        g = np.clip(values / 65535.0, 0, 1).astype(np.float32)
        return np.repeat(g[..., None], 3, axis=2), None, True, 16
    if mode == "F":
        g = np.clip(np.asarray(im, dtype=np.float32), 0, 1)
        return np.repeat(g[..., None], 3, axis=2), None, True, 16
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode == "PA":
        im = im.convert("RGBA")
    elif mode in ("1", "L"):
        g = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
        return np.repeat(g[..., None], 3, axis=2), None, True, 8
    elif mode in ("LA", "La"):
        la = np.asarray(im.convert("LA"), dtype=np.float32) / 255.0
        return np.repeat(la[..., :1], 3, axis=2), la[..., 1], True, 8
    elif mode in ("RGBa",):
        im = im.convert("RGBA")
    if im.mode not in ("RGB", "RGBA"):
        im = im.convert("RGB")  # CMYK, YCbCr, LAB, HSV
    rgb, alpha = _split_alpha(np.asarray(im, dtype=np.float32) / 255.0)
    return rgb, alpha, False, 8


def _orient(a: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to an H×W(×C) array so it displays upright."""
    ops = {
        2: lambda x: x[:, ::-1],
        3: lambda x: x[::-1, ::-1],
        4: lambda x: x[::-1],
        5: lambda x: np.swapaxes(x, 0, 1),
        6: lambda x: np.swapaxes(x, 0, 1)[:, ::-1],
        7: lambda x: np.swapaxes(x, 0, 1)[::-1, ::-1],
        8: lambda x: np.swapaxes(x, 0, 1)[::-1],
    }
    return np.ascontiguousarray(ops[orientation](a)) if orientation in ops else a


def output_format(path: os.PathLike | str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in WRITE_FORMATS:
        raise ImageError(path, f"cannot write '{suffix}' files; use one of {', '.join(sorted(WRITE_FORMATS))}")
    return WRITE_FORMATS[suffix]


def encode_image(img: LoadedImage, fmt: str, quality: int = 95) -> bytes:
    """The bytes of ``img`` in ``fmt`` (PNG, JPEG, WEBP, BMP, TIFF), keeping depth, alpha and metadata
    where the format can hold them (JPEG and BMP have no alpha; BMP and JPEG/WebP have no 16-bit)."""
    keep_alpha = img.alpha is not None and fmt in ("PNG", "WEBP", "TIFF")
    if img.bit_depth == 16 and fmt in ("PNG", "TIFF"):
        return _encode_16bit(img, fmt, keep_alpha)
    rgb8 = _quantize(img.rgb, 255, np.uint8)
    if img.grayscale:
        y = _gray(rgb8)
        pil = Image.fromarray(np.dstack([y, _quantize(img.alpha, 255, np.uint8)]), "LA") if keep_alpha \
            else Image.fromarray(y, "L")
        if fmt == "WEBP":  # WebP has no grayscale mode
            pil = pil.convert("RGBA" if keep_alpha else "RGB")
    elif keep_alpha:
        pil = Image.fromarray(np.dstack([rgb8, _quantize(img.alpha, 255, np.uint8)]), "RGBA")
    else:
        pil = Image.fromarray(rgb8, "RGB")
    options: dict = {}
    if fmt in ("JPEG", "WEBP"):
        options["quality"] = int(quality)
    if fmt != "BMP":
        if img.icc_profile:
            options["icc_profile"] = img.icc_profile
        if img.exif:
            options["exif"] = img.exif
    buf = io.BytesIO()
    pil.save(buf, format=fmt, **options)
    return buf.getvalue()


def _quantize(a: np.ndarray, peak: int, dtype) -> np.ndarray:
    return (np.clip(a, 0, 1) * peak + 0.5).astype(dtype)


def _gray(rgb: np.ndarray) -> np.ndarray:
    # Grayscale sources were replicated to RGB; the model may tint them slightly, so average back.
    return (rgb.astype(np.float32).mean(axis=2) + 0.5).astype(rgb.dtype)


def _encode_16bit(img: LoadedImage, fmt: str, keep_alpha: bool) -> bytes:
    rgb16 = _quantize(img.rgb, 65535, np.uint16)
    if img.grayscale:
        pixels = _gray(rgb16)
        if keep_alpha:
            a = _quantize(img.alpha, 65535, np.uint16)
            pixels = np.dstack([pixels, pixels, pixels, a])  # OpenCV writes no gray+alpha; keep RGBA
    else:
        pixels = rgb16[..., ::-1]
        if keep_alpha:
            pixels = np.dstack([pixels, _quantize(img.alpha, 65535, np.uint16)])
    ok, data = cv2.imencode(".png" if fmt == "PNG" else ".tiff", np.ascontiguousarray(pixels))
    if not ok:
        raise ValueError(f"OpenCV could not encode a 16-bit {fmt}")
    data = data.tobytes()
    return _png_add_metadata(data, img.icc_profile, img.exif) if fmt == "PNG" else data


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png_add_metadata(png: bytes, icc: Optional[bytes], exif: Optional[bytes]) -> bytes:
    """Insert iCCP and eXIf chunks after IHDR (OpenCV's encoder writes neither)."""
    chunks = b""
    if icc:
        chunks += _png_chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(icc))
    if exif:
        chunks += _png_chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif)
    ihdr_end = 8 + 8 + 13 + 4  # signature + IHDR length/type + IHDR data + CRC
    return png[:ihdr_end] + chunks + png[ihdr_end:]


def write_image(path: os.PathLike | str, img: LoadedImage, quality: int = 95) -> Path:
    """Encode then write atomically (see :func:`write_atomic`). Never partial."""
    path = Path(path)
    return write_atomic(path, encode_image(img, output_format(path), quality))


def write_atomic(path: os.PathLike | str, data: bytes) -> Path:
    """Write ``data`` to a temp file in the target folder, fsync, rename: readers see all or nothing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The writer's host and PID in the name let a later run, on any node of a shared folder, tell a
    # crashed writer's leftovers from live ones (see remove_stale_parts).
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f"@{_host()}.{os.getpid()}{PART_SUFFIX}",
                               dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; outputs get normal file permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def remove_stale_parts(folder: os.PathLike | str) -> list[Path]:
    """Delete temp files left in ``folder`` by writers that died (e.g. killed mid-write).

    The folder may be shared between nodes (a Ray cluster), where another host's PIDs mean nothing
    here: a part goes when this host wrote it and its PID is dead, or when it is older than a day.
    Parts without a host in their name (older versions) count as another host's.
    """
    removed = []
    for part in Path(folder).glob(f".*{PART_SUFFIX}"):
        if _is_stale_part(part):
            part.unlink(missing_ok=True)
            removed.append(part)
    return removed


def _is_stale_part(part: Path) -> bool:
    named = PART_NAME.fullmatch(part.name)
    if named is None and HOSTLESS_PART_NAME.fullmatch(part.name) is None:
        return False  # not a part this module wrote
    if named is not None and named["host"] == _host() and not _pid_alive(int(named["pid"])):
        return True
    try:
        return time.time() - part.stat().st_mtime > STALE_PART_SECONDS
    except FileNotFoundError:  # finished or removed meanwhile
        return False


def _host() -> str:
    """This machine's name as it appears in temp-file names (characters outside a host name replaced)."""
    return re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname()) or "localhost"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
