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

import dataclasses

from PIL import Image

from ml.experiment import scores, served_valid

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


def main() -> None:
    classifier, squares, labels, model = served_valid(__doc__)
    served = classifier.prep
    rules = {"squeeze": dataclasses.replace(served, max_aspect=float("inf")),
             "centre square": dataclasses.replace(served, max_aspect=1.0),
             f"trim to {served.max_aspect:.3g}, then squeeze (served)": served}
    print(f"{len(labels)} valid photos, model {model}\n")
    print("| photo | made square by | top-1 | top-3 |\n|---|---|---:|---:|")
    print("| square original | - | %.1f%% | %.1f%% |" % tuple(100 * s for s in scores(classifier, squares, labels, served)))
    for shape, aspect in (("16:9 band", WIDE), ("9:16 band", 1 / WIDE)):
        cut = [band(image, aspect) for image in squares]
        for name, prep in rules.items():
            top1, top3 = scores(classifier, cut, labels, prep)
            print(f"| {shape} | {name} | {100 * top1:.1f}% | {100 * top3:.1f}% |", flush=True)


if __name__ == "__main__":
    main()
