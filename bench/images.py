"""The images every phase uses: real photos from the valid split, read into memory once, so each
phase sends the same bytes and no phase pays for disk reads the others do not."""
from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

from harness import valid_images

LARGE_SIZE = (4000, 3000)  # a 12-megapixel phone photo, the usual size of a real upload


@dataclass(frozen=True)
class Photo:
    name: str
    data: bytes


def load_photos(count: int) -> list[Photo]:
    """`count` distinct photos taken from each class in turn (photos repeat only past the split's size)."""
    return [Photo(f"{label}-{path.name}", path.read_bytes()) for path, label in valid_images(count)]


def large_jpeg(photo: Photo, size: tuple[int, int] = LARGE_SIZE) -> bytes:
    """The photo upscaled to phone size: the valid split is all 224x224, which hides what decoding
    a real upload costs (the part of preprocessing that grows with the file, not the model)."""
    image = Image.open(io.BytesIO(photo.data)).convert("RGB").resize(size, Image.BICUBIC)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def batches(photos: list[Photo], size: int, total: int) -> list[list[Photo]]:
    """`total` images cut into groups of `size` (one job, or one inference batch, each), cycling
    through `photos` so every phase covers the same images in the same order."""
    count = max(1, total // size)
    return [[photos[(j * size + k) % len(photos)] for k in range(size)] for j in range(count)]
