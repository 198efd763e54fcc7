"""Is a cheaper way to shrink large photos as accurate? `python -m bench.resize`

The valid split is all 224x224, so it says nothing about how large uploads are shrunk. Here every
valid photo is enlarged to phone size (4:3, JPEG, as bench.images makes it), then shrunk to the
model input in each candidate way, classified by the served model, and scored; the time is the
median to turn one such upload into a model input.

Candidates (the first is what common/preprocess.py does):
- draft 2x: JPEG decoded at the smallest DCT scale that keeps 2x the input size, then bilinear;
- draft 1x: the DCT scale keeps just the input size, bilinear does less;
- draft 2x + reducing_gap: Pillow box-reduces by an integer factor before the bilinear pass.
"""
from __future__ import annotations

import argparse
import io
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

from bench.images import Photo, large_jpeg
from common.preprocess import RESAMPLING, center_crop_aspect, preprocess, to_array
from common.settings import Settings
from ml.data import ServedImages
from worker.inference import Classifier, default_threads

MAX_PIXELS = Settings().max_pixels


def shrink(data: bytes, classifier: Classifier, draft_factor: int, reducing_gap: float | None) -> np.ndarray:
    """The production decode (common/preprocess.py) with the two knobs this experiment turns."""
    prep = classifier.prep
    image = Image.open(io.BytesIO(data))
    image.draft("RGB", (prep.size * draft_factor, prep.size * draft_factor))
    image = ImageOps.exif_transpose(image).convert("RGB")
    square = center_crop_aspect(image, prep.max_aspect).resize((prep.size, prep.size), RESAMPLING[prep.resample],
                                                                 reducing_gap=reducing_gap)
    return to_array(square, prep)


CANDIDATES = {
    "draft 2x (production)": lambda data, c: preprocess(data, c.prep, MAX_PIXELS),
    "draft 1x": lambda data, c: shrink(data, c, 1, None),
    "draft 2x + reducing_gap 2": lambda data, c: shrink(data, c, 2, 2.0),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=Settings.from_env().model_path)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/sports100/valid"))
    parser.add_argument("--limit", type=int, default=0, help="photos per class (0: all)")
    args = parser.parse_args()
    classifier = Classifier(args.model, str(Path(args.model).with_suffix(".json")), default_threads(1))
    samples = ServedImages(args.data, classifier.card["classes"], classifier.prep, args.limit).samples
    uploads = [large_jpeg(Photo(path.name, path.read_bytes())) for path, _ in tqdm(samples, desc="enlarge", unit="photo")]
    labels = np.array([label for _, label in samples])
    print(f"{len(samples)} valid photos enlarged to 4000x3000 JPEG; model {Path(args.model).name}\n")
    print("| shrinking | top-1 | top-3 | ms per upload (median) |\n|---|---:|---:|---:|")
    for name, candidate in CANDIDATES.items():
        times, inputs = [], []
        for data in tqdm(uploads, desc=name, unit="photo", leave=False):
            start = time.perf_counter()
            inputs.append(candidate(data, classifier))
            times.append((time.perf_counter() - start) * 1000)
        best3 = np.concatenate([np.argsort(-classifier.session.run(None, {classifier.input_name: np.stack(inputs[i:i + 32])})[0], axis=1)[:, :3]
                                for i in range(0, len(inputs), 32)])
        top1, top3 = (best3[:, 0] == labels).mean(), (best3 == labels[:, None]).any(axis=1).mean()
        print(f"| {name} | {top1:.1%} | {top3:.1%} | {statistics.median(times):.2f} |", flush=True)


if __name__ == "__main__":
    main()
