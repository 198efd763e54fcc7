"""How the served model holds up on photos unlike the valid split: `python -m ml.robustness`

The valid photos are clean 224x224 JPEGs; real uploads are darker or brighter, blurred, heavily
compressed, small, grey, tilted or in other formats. Each valid photo is changed one way at a time,
encoded to bytes, and sent through the service's own decoding and preprocessing. Prints top-1 and
top-3 for each change; the unchanged photos are the reference. (Shapes: `python -m ml.aspect`;
large photos: `python -m bench.resize`.)
"""
from __future__ import annotations

import io
from typing import Callable

from PIL import Image, ImageEnhance, ImageFilter
from tqdm import tqdm

from common.preprocess import decode_rgb
from ml.data import MAX_PIXELS
from ml.experiment import scores, served_valid


def encoded(image: Image.Image, fmt: str = "JPEG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


# name -> the upload made from a valid photo
CHANGES: dict[str, Callable[[Image.Image], bytes]] = {
    "unchanged (JPEG q95)": lambda im: encoded(im, quality=95),
    "darker (brightness x0.5)": lambda im: encoded(ImageEnhance.Brightness(im).enhance(0.5), quality=95),
    "brighter (brightness x1.5)": lambda im: encoded(ImageEnhance.Brightness(im).enhance(1.5), quality=95),
    "low contrast (x0.5)": lambda im: encoded(ImageEnhance.Contrast(im).enhance(0.5), quality=95),
    "greyscale": lambda im: encoded(im.convert("L"), quality=95),
    "slightly blurred (Gaussian, radius 1)": lambda im: encoded(im.filter(ImageFilter.GaussianBlur(1)), quality=95),
    "blurred (Gaussian, radius 2)": lambda im: encoded(im.filter(ImageFilter.GaussianBlur(2)), quality=95),
    "JPEG quality 15": lambda im: encoded(im, quality=15),
    "small (96x96 upload)": lambda im: encoded(im.resize((96, 96), Image.BICUBIC), quality=95),
    "tilted 10 degrees": lambda im: encoded(im.rotate(10, Image.BILINEAR, fillcolor=(128, 128, 128)), quality=95),
    "PNG": lambda im: encoded(im, "PNG"),
    "WebP (quality 75)": lambda im: encoded(im, "WEBP", quality=75),
}


def main() -> None:
    classifier, photos, labels, model = served_valid(__doc__)
    prep = classifier.prep
    rows = []
    for name, change in tqdm(CHANGES.items(), desc="changes", unit="change"):
        served = [decode_rgb(change(photo), prep.size, MAX_PIXELS) for photo in photos]
        rows.append((name, *scores(classifier, served, labels, prep)))
    print(f"\n{len(labels)} valid photos, model {model}\n")
    print("| upload | top-1 | top-3 |\n|---|---:|---:|")
    for name, top1, top3 in rows:
        print(f"| {name} | {100 * top1:.1f}% | {100 * top3:.1f}% |")


if __name__ == "__main__":
    main()
