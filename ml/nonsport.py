"""Photos of no sport at all, to check that the model says "not sure" about them.

The photos are scikit-image's bundled sample images (`skimage.data`: an astronaut, a cat, coffee,
coins, a rocket, the Hubble deep field, microscope slides, text pages...; no download needed), and
pictures made here that people upload by mistake: screenshots of charts and text, plain colour
gradients and noise.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

# Every skimage.data image that ships in the wheel and is a picture (not a generated test pattern);
# `cat` is the same photo as `chelsea`.
SKIMAGE_NAMES = ("astronaut", "brick", "camera", "cell", "chelsea", "clock", "coffee", "coins", "colorwheel",
                 "grass", "gravel", "horse", "hubble_deep_field", "immunohistochemistry", "logo", "microaneurysms",
                 "moon", "page", "retina", "rocket", "text")


def _as_image(array: np.ndarray) -> Image.Image:
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    return Image.fromarray(array).convert("RGB")


def _chart(seed: int) -> Image.Image:
    """A screenshot-like bar chart with axis lines and labels."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (640, 400), "white")
    draw = ImageDraw.Draw(image)
    draw.line([(50, 20), (50, 360), (620, 360)], fill="black", width=2)
    for i, height in enumerate(rng.integers(30, 320, 8)):
        x = 70 + i * 68
        draw.rectangle([x, 360 - int(height), x + 40, 360], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
        draw.text((x, 370), f"Q{i + 1}", fill="black")
    draw.text((60, 5), "Quarterly revenue", fill="black")
    return image


def _text_page(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (500, 640), (250, 250, 245))
    draw = ImageDraw.Draw(image)
    words = ["invoice", "total", "the", "meeting", "report", "page", "summary", "notes", "and", "of"]
    for line in range(30):
        draw.text((30, 20 + 20 * line), " ".join(rng.choice(words, 8)), fill="black")
    return image


def _gradient(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, 255, 3), rng.integers(0, 255, 3)
    t = np.linspace(0, 1, 320)[None, :, None]
    return Image.fromarray(np.repeat((a * (1 - t) + b * t).astype(np.uint8), 240, axis=0))


def _noise(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (240, 320, 3), dtype=np.uint8))


def non_sport_photos() -> dict[str, bytes]:
    """Name -> JPEG bytes, as an upload would arrive."""
    import skimage.data

    images = {name: _as_image(getattr(skimage.data, name)()) for name in SKIMAGE_NAMES}
    for seed in range(4):
        images |= {f"chart-{seed}": _chart(seed), f"text-page-{seed}": _text_page(seed),
                   f"gradient-{seed}": _gradient(seed)}
    images |= {f"noise-{seed}": _noise(seed) for seed in range(2)}
    encoded = {}
    for name, image in images.items():
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=90)
        encoded[name] = buffer.getvalue()
    return encoded
