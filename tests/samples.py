"""Images that are odd but valid, and images that are bad, built in memory: shared by the unit
tests of preprocessing and the end-to-end test that sends them all through the service."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def gradient(width: int = 320, height: int = 240, mode: str = "RGB") -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)[None, :].repeat(height, 0)
    rgb = np.stack([x, x[:, ::-1], np.full_like(x, 90)], axis=2)
    return Image.fromarray(rgb).convert(mode)


def exif_rotated(image: Image.Image) -> bytes:
    """A JPEG whose EXIF says "rotate 90 degrees clockwise to display", as phones write them."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(image, "JPEG", exif=exif)


ODD_BUT_VALID = {
    "greyscale jpeg": lambda: encode(gradient(mode="L"), "JPEG"),
    "cmyk jpeg": lambda: encode(gradient(mode="CMYK"), "JPEG"),
    "16-bit png": lambda: encode(Image.fromarray((np.arange(240 * 320).reshape(240, 320) % 65535).astype(np.uint16)), "PNG"),
    "palette png": lambda: encode(gradient().convert("P"), "PNG"),
    "transparent png": lambda: encode(gradient(mode="RGBA"), "PNG"),
    "gif": lambda: encode(gradient().convert("P"), "GIF"),
    "webp": lambda: encode(gradient(), "WEBP"),
    "bmp": lambda: encode(gradient(), "BMP"),
    "exif-rotated jpeg": lambda: exif_rotated(gradient()),
    "tiny 1x1": lambda: encode(Image.new("RGB", (1, 1), "red"), "PNG"),
    "panorama 4000x300": lambda: encode(gradient(4000, 300), "JPEG"),
    "tall 200x3000": lambda: encode(gradient(200, 3000), "PNG"),
    "photo 4000x3000": lambda: encode(gradient(4000, 3000), "JPEG", quality=90),
}

BAD = {
    "empty": (b"", "empty_file"),
    "text named .jpg": (b"hello, this is text", "not_an_image"),
    "pdf": (b"%PDF-1.4\n1 0 obj<<>>endobj\n", "not_an_image"),
    "random bytes": (bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8)), "not_an_image"),
    "eps (a format we do not open)": (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "not_an_image"),
}


def bomb() -> bytes:
    """A 24000x24000 PNG (576 megapixels) in a few tens of KB: a decompression bomb."""
    return encode(Image.new("1", (24000, 24000)), "PNG")
