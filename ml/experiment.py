"""What the experiments on the served model share (`ml.aspect`, `ml.robustness`): the served model
and the valid photos, loaded the same way, and top-1/top-3 of images as the service prepares them."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from common.preprocess import Preprocessing, to_array
from common.settings import Settings
from ml.data import ServedImages
from worker.inference import Classifier, default_threads


def served_valid(description: str) -> tuple[Classifier, list[Image.Image], np.ndarray, str]:
    """Parses --model (default: the served one) and --data (the valid split); returns the model,
    the photos as RGB images, their labels and the model's file name."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=Settings.from_env().model_path)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/sports100/valid"))
    args = parser.parse_args()
    classifier = Classifier(args.model, str(Path(args.model).with_suffix(".json")), default_threads(1))
    samples = ServedImages(args.data, classifier.card["classes"], classifier.prep).samples
    photos = [Image.open(path).convert("RGB") for path, _ in samples]
    return classifier, photos, np.array([label for _, label in samples]), Path(args.model).name


def scores(classifier: Classifier, images: list[Image.Image], labels: np.ndarray, prep: Preprocessing) -> tuple[float, float]:
    """Top-1 and top-3 accuracy of `images` prepared with `prep`."""
    best3 = np.concatenate([
        np.argsort(-classifier.session.run(None, {classifier.input_name: np.stack([to_array(im, prep) for im in images[i:i + 32]])})[0], axis=1)[:, :3]
        for i in range(0, len(images), 32)])
    return float((best3[:, 0] == labels).mean()), float((best3 == labels[:, None]).any(axis=1).mean())
