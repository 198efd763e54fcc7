"""How should a photo that is not square become the model's square input? `python -m ml.aspect`

Real uploads are 4:3, 3:2, 16:9, portrait or landscape; the valid split is all square. Here each
valid photo's central 16:9 band (landscape) and 9:16 band (portrait) stand in for a wide and a
tall photo of the same scene, and each is made square in three ways:
- squeeze: the whole photo resized to a square (nothing lost, shapes distorted up to 1.78x);
- centre square: the central square kept (no distortion, the sides lost);
- trim to 4:3, then squeeze (the service's rule, `max_aspect` in the model card): distortion no
  larger than training's random crops produced, the rest trimmed.
Prints top-1 and top-3 of the served model for each; the square originals are the reference.
"""
from __future__ import annotations

import argparse
import dataclasses
import io
from pathlib import Path

import numpy as np
from PIL import Image

from common.preprocess import Preprocessing, to_array
from common.settings import Settings
from ml.data import ServedImages
from worker.inference import Classifier, default_threads

WIDE = 16 / 9


def band(image: Image.Image, aspect: float) -> Image.Image:
    """The central band of a square image with width/height = `aspect`."""
    side = image.width
    if aspect >= 1:
        height = round(side / aspect)
        top = (side - height) // 2
        return image.crop((0, top, side, top + height))
    width = round(side * aspect)
    left = (side - width) // 2
    return image.crop((left, 0, left + width, side))


def scores(classifier: Classifier, images: list[Image.Image], labels: np.ndarray, prep: Preprocessing) -> tuple[float, float]:
    best3 = np.concatenate([
        np.argsort(-classifier.session.run(None, {classifier.input_name: np.stack([to_array(im, prep) for im in images[i:i + 32]])})[0], axis=1)[:, :3]
        for i in range(0, len(images), 32)])
    return float((best3[:, 0] == labels).mean()), float((best3 == labels[:, None]).any(axis=1).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=Settings.from_env().model_path)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/sports100/valid"))
    args = parser.parse_args()
    classifier = Classifier(args.model, str(Path(args.model).with_suffix(".json")), default_threads(1))
    served = classifier.prep
    samples = ServedImages(args.data, classifier.card["classes"], served).samples
    squares = [Image.open(io.BytesIO(path.read_bytes())).convert("RGB") for path, _ in samples]
    labels = np.array([label for _, label in samples])
    rules = {"squeeze": dataclasses.replace(served, max_aspect=float("inf")),
             "centre square": dataclasses.replace(served, max_aspect=1.0),
             f"trim to {served.max_aspect:.3g}, then squeeze (served)": served}
    print(f"{len(samples)} valid photos, model {Path(args.model).name}\n")
    print("| photo | made square by | top-1 | top-3 |\n|---|---|---:|---:|")
    print("| square original | - | %.1f%% | %.1f%% |" % tuple(100 * s for s in scores(classifier, squares, labels, served)))
    for shape, aspect in (("16:9 band", WIDE), ("9:16 band", 1 / WIDE)):
        cut = [band(image, aspect) for image in squares]
        for name, prep in rules.items():
            top1, top3 = scores(classifier, cut, labels, prep)
            print(f"| {shape} | {name} | {100 * top1:.1f}% | {100 * top3:.1f}% |", flush=True)


if __name__ == "__main__":
    main()
