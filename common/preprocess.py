"""Image decoding and preprocessing: the one definition the worker, evaluation and training's
validation all use, so the service sees exactly what the model was measured on.

Pure Pillow + NumPy: the web process may import it to sniff uploads without pulling in a model runtime.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from common.error_codes import ErrorCode

# Only the formats people send as photos: Pillow would also open EPS (through Ghostscript) and other
# rarely used decoders, each one more attack surface. (Cameras' MPO files open as JPEG.)
FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")
Image.init()  # registers every plugin, so `formats=` can name those Pillow loads only on demand
RESAMPLING = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS}
# JPEG decodes at the smallest of 1/8, 1/4, 1/2 or full scale that keeps this many times the model's
# input size, so quality at the input size is unaffected; the other formats always decode in full.
DRAFT_FACTOR = 2
MB = 1024 * 1024


class ImageError(ValueError):
    """An upload that is not a usable image; `code` is the stable machine-readable reason."""

    def __init__(self, code: ErrorCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Preprocessing:
    """What the model expects; built from the model card, never hard-coded elsewhere."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    # Wider (or taller) photos are trimmed at the centre to this aspect ratio before the square
    # resize: training's random crops span 3/4..4/3, so a photo squeezed beyond that looks unlike
    # anything the model saw, while trimming a 16:9 photo to 4:3 keeps most of the scene.
    max_aspect: float = 4 / 3
    resample: str = "bilinear"

    @classmethod
    def from_card(cls, card: dict) -> "Preprocessing":
        p = card["preprocessing"]
        return cls(size=int(p["input_size"]), mean=tuple(p["mean"]), std=tuple(p["std"]),
                   max_aspect=float(p["max_aspect"]), resample=p["resample"])

    def as_card(self) -> dict:
        return {"input_size": self.size, "mean": list(self.mean), "std": list(self.std),
                "max_aspect": self.max_aspect, "resample": self.resample}


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Reads the header only (cheap): format and size are known, no pixels are decoded yet."""
    if not data:
        raise ImageError(ErrorCode.EMPTY_FILE, "the file is empty")
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError:  # Pillow's own guard, far above ours
        raise ImageError(ErrorCode.IMAGE_TOO_LARGE, f"the image is over the limit of {max_pixels:,} pixels") from None
    except UnidentifiedImageError:
        expected = ", ".join(FORMATS)
        raise ImageError(ErrorCode.NOT_AN_IMAGE, f"not a readable image (expected one of {expected})") from None
    except MemoryError:  # some decoders allocate their canvas on open: the worker's memory ceiling
        raise ImageError(ErrorCode.IMAGE_TOO_HEAVY, "opening the image ran out of the worker's memory ceiling") from None
    except Exception as exc:  # any decoder's complaint about a header is the client's file, not a 500
        raise ImageError(ErrorCode.NOT_AN_IMAGE, f"not a readable image ({type(exc).__name__})") from None
    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(
            ErrorCode.IMAGE_TOO_LARGE, f"{width}x{height} pixels is over the limit of {max_pixels:,} pixels"
        )
    return image


def decoded_size(image: Image.Image, size: int) -> tuple[int, int]:
    """The size `decode_rgb` decodes `image` at (as JPEG's draft() picks its scale), from its header."""
    width, height = image.size
    if image.format != "JPEG":
        return width, height
    fits = min(width, height) // (size * DRAFT_FACTOR)
    scale = next((s for s in (8, 4, 2) if fits >= s), 1)
    return -(-width // scale), -(-height // scale)


def bytes_per_pixel(mode: str) -> int:
    """What Pillow stores per decoded pixel: 8-bit single-band modes take one byte, 16-bit
    greyscale two, everything else four (RGB is padded to four bytes too)."""
    if mode in ("1", "L", "P"):
        return 1
    return 2 if mode.startswith("I;16") else 4


def decode_cost(image: Image.Image, size: int) -> int:
    """The bytes the decoded pixels take, known from the header: what decoding will cost."""
    width, height = decoded_size(image, size)
    return width * height * bytes_per_pixel(image.mode)


def check_cost(image: Image.Image, size: int, max_decode_mb: float) -> int:
    """The image's decode cost, or ImageError when it is over the budget."""
    cost = decode_cost(image, size)
    if cost > max_decode_mb * MB:
        width, height = image.size
        raise ImageError(ErrorCode.IMAGE_TOO_HEAVY, f"{width}x{height} {image.format} ({image.mode}) decodes to "
                         f"{cost / MB:,.0f} MB, over the limit of {max_decode_mb:,} MB")
    return cost


def decode_rgb(data: bytes, size: int, max_pixels: int, max_decode_mb: float = math.inf) -> Image.Image:
    """Decodes an upload to an upright RGB image, letting JPEG decode at reduced scale when the
    photo is much larger than the model input (a 4000x3000 photo decodes at 1/8 the work)."""
    image = open_image(data, max_pixels)
    check_cost(image, size, max_decode_mb)
    try:
        image.draft("RGB", (size * DRAFT_FACTOR, size * DRAFT_FACTOR))
        image.seek(0)  # first frame of a GIF or other animation
        image.load()
        ImageOps.exif_transpose(image, in_place=True)  # in place: no copy of an upright photo
        return _to_rgb(image)
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise ImageError(ErrorCode.CORRUPT_IMAGE, f"the image could not be decoded ({exc})") from None
    except MemoryError:  # the pool process's memory ceiling (worker/runtime.py), reached by this image
        raise ImageError(ErrorCode.IMAGE_TOO_HEAVY, "decoding the image ran out of the worker's memory ceiling") from None


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: scale to 8 bits rather than let convert() clip at 255.
        pixels = np.asarray(image, dtype=np.float32)
        image = Image.fromarray((pixels / max(pixels.max(), 1.0) * 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent areas become white, as a browser would show them, not black.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def center_crop_aspect(image: Image.Image, max_aspect: float) -> Image.Image:
    """Trims the long side so the aspect ratio is at most `max_aspect`."""
    width, height = image.size
    if width > height * max_aspect:
        new_width = round(height * max_aspect)
        left = (width - new_width) // 2
        return image.crop((left, 0, left + new_width, height))
    if height > width * max_aspect:
        new_height = round(width * max_aspect)
        top = (height - new_height) // 2
        return image.crop((0, top, width, top + new_height))
    return image


def to_array(image: Image.Image, prep: Preprocessing) -> np.ndarray:
    """RGB image -> normalized float32 CHW array of shape (3, size, size)."""
    square = center_crop_aspect(image, prep.max_aspect)
    if square.size != (prep.size, prep.size):
        square = square.resize((prep.size, prep.size), RESAMPLING[prep.resample])
    # (x / 255 - mean) / std as one multiply-add, on the CHW copy (one pass instead of four).
    scale = 1 / (255 * np.asarray(prep.std, np.float32))
    offset = -np.asarray(prep.mean, np.float32) / np.asarray(prep.std, np.float32)
    pixels = np.asarray(square).transpose(2, 0, 1).astype(np.float32)
    pixels *= scale[:, None, None]
    pixels += offset[:, None, None]
    return pixels


def preprocess(data: bytes, prep: Preprocessing, max_pixels: int, max_decode_mb: float = math.inf) -> np.ndarray:
    """Upload bytes -> model input, or ImageError saying why not."""
    return to_array(decode_rgb(data, prep.size, max_pixels, max_decode_mb), prep)
