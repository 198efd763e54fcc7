"""Honest confidence: a temperature fitted on valid, and the threshold above which an answer counts
as confident. Writes both into the model card, which the worker reads.

    python -m ml.calibrate            # the served model; card updated, plot in ml/reports/calibration/
    python -m ml.calibrate --model models/sports100-lite0.onnx --no-write

Temperature scaling divides the log-probabilities by one number T fitted (least negative
log-likelihood) on valid: rankings stay as they are, so top-1/top-3 do not change; only what a
confidence of 0.8 means does. The threshold comes from wild-dev's risk-coverage curve: the lowest
calibrated top-1 confidence such that the answers at or above it are right at least TARGET of the
time. Photos of no sport at all (ml/nonsport.py) should then mostly fall below it.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from common.preprocess import preprocess
from common.settings import Settings
from ml.data import MAX_PIXELS, ServedImages
from ml.evaluate import DEFAULT_SETS, predict_probabilities
from ml.nonsport import non_sport_photos
from ml.plots import plot_risk_coverage
from worker.inference import Classifier, calibrated

TARGET = 0.95  # answers marked confident are right this often on wild-dev
BINS = 15  # expected calibration error: equal-width confidence bins


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The T of least negative log-likelihood, on a log-spaced grid (one parameter: a grid is exact enough)."""
    def nll(t: float) -> float:
        p = calibrated(probabilities, t)[np.arange(len(labels)), labels]
        return float(-np.log(np.clip(p, 1e-12, 1)).mean())
    return float(min(np.exp(np.linspace(np.log(0.05), np.log(10), 400)), key=nll))


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean |accuracy - confidence| over confidence bins, weighted by how many answers fall in each."""
    confidence, correct = probabilities.max(axis=1), probabilities.argmax(axis=1) == labels
    bins = np.minimum((confidence * BINS).astype(int), BINS - 1)
    return float(sum(abs(correct[bins == b].mean() - confidence[bins == b].mean()) * (bins == b).mean()
                     for b in range(BINS) if (bins == b).any()))


def risk_coverage(confidence: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Answers sorted by confidence: the threshold at each, accuracy and coverage of those at or above it."""
    order = np.argsort(-confidence)
    kept = np.arange(1, len(order) + 1)
    return confidence[order], np.cumsum(correct[order]) / kept, kept / len(order)


def choose_threshold(confidence: np.ndarray, correct: np.ndarray, target: float = TARGET) -> float:
    thresholds, accuracy, _ = risk_coverage(confidence, correct)
    meets = np.nonzero(accuracy >= target)[0]
    return float(thresholds[meets[-1]]) if len(meets) else 1.0


def _probabilities(classifier: Classifier, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    samples = ServedImages(folder, classifier.card["classes"], classifier.prep).samples
    probabilities, _ = predict_probabilities(classifier, samples)
    readable = ~np.isnan(probabilities).any(axis=1)
    return probabilities[readable], np.array([label for _, label in samples])[readable]


def calibrate(model: Path, valid: Path, wild: Path, plot: Path | None = None, write: bool = True) -> dict:
    classifier = Classifier(str(model), str(model.with_suffix(".json")), threads=2)
    sets = {"valid": _probabilities(classifier, valid), "wild-dev": _probabilities(classifier, wild)}
    temperature = fit_temperature(*sets["valid"])
    scaled = {name: (calibrated(p, temperature), labels) for name, (p, labels) in sets.items()}
    wild_p, wild_labels = scaled["wild-dev"]
    threshold = choose_threshold(wild_p.max(axis=1), wild_p.argmax(axis=1) == wild_labels)
    photos = non_sport_photos()
    other = calibrated(classifier.probabilities(np.stack([preprocess(b, classifier.prep, MAX_PIXELS) for b in photos.values()])),
                       temperature)
    result = {"temperature": round(temperature, 4), "confident_threshold": round(threshold, 4), "target_precision": TARGET,
              "fitted_on": "valid (temperature), wild-dev (threshold)",
              "ece": {name: {"before": round(expected_calibration_error(*sets[name]), 4),
                             "after": round(expected_calibration_error(*scaled[name]), 4)} for name in sets},
              "confident": {name: _confident_share(p, labels, threshold) for name, (p, labels) in scaled.items()},
              "non_sport_uncertain": {"photos": len(photos), "share": round(float((other.max(axis=1) < threshold).mean()), 4),
                                      "source": "skimage.data sample images and made charts, text pages, gradients, noise"}}
    if plot is not None:
        plot_risk_coverage({name: risk_coverage(p.max(axis=1), p.argmax(axis=1) == labels) for name, (p, labels) in scaled.items()},
                           threshold, TARGET, plot)
    if write:
        card_path = model.with_suffix(".json")
        card = json.loads(card_path.read_text())
        card["calibration"] = result
        card_path.write_text(json.dumps(card, indent=1) + "\n")
    return result


def _confident_share(probabilities: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
    confident = probabilities.max(axis=1) >= threshold
    correct = probabilities.argmax(axis=1) == labels
    return {"coverage": round(float(confident.mean()), 4),
            "precision": round(float(correct[confident].mean()), 4) if confident.any() else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path(Settings.from_env().model_path), help="default: the served model")
    parser.add_argument("--valid", type=Path, default=DEFAULT_SETS["valid"])
    parser.add_argument("--wild", type=Path, default=DEFAULT_SETS["wild-dev"])
    parser.add_argument("--plot", type=Path, default=Path("ml/reports/calibration/risk-coverage.png"))
    parser.add_argument("--no-write", dest="write", action="store_false", help="print only; leave the card as it is")
    args = parser.parse_args()
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    print(json.dumps(calibrate(args.model, args.valid, args.wild, args.plot, args.write), indent=1))


if __name__ == "__main__":
    main()
