"""Evaluates an exported ONNX model on any folder-per-class image tree, through the worker's own
code (its preprocessing and its ONNX Runtime session), so the figures are what the service gives.

    python -m ml.evaluate   # the served model on valid and wild-dev; reports in ml/reports/<set>
    python -m ml.evaluate --model models/sports100-lite0.onnx --set mine=path/to/photos --reports /tmp/r

Writes report.json (top-1, top-3, per-class precision/recall/F1, most confused pairs),
summary.md, confusion.png and misses.png (a contact sheet of the photos it got wrong).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from common.preprocess import ImageError, preprocess
from common.settings import Settings
from ml.data import MAX_PIXELS, ServedImages
from ml.plots import plot_confusion, plot_contact_sheet
from worker.inference import Classifier

BATCH = 32
# valid: the data set's own photos; wild-dev: real-world photos of 13 sports, for measuring only.
DEFAULT_SETS = {"valid": Path("../shared/data/sports100/valid"), "wild-dev": Path("../shared/data/wild-dev")}


def predict_probabilities(classifier: Classifier, samples: list[tuple[Path, int]]) -> tuple[np.ndarray, list[str]]:
    """The model's raw class probabilities per image (a row of NaN for an unreadable file)."""
    probabilities = np.full((len(samples), len(classifier.card["classes"])), np.nan, dtype=np.float32)
    unreadable = []
    for start in tqdm(range(0, len(samples), BATCH), desc="evaluate", unit="batch"):
        rows, arrays = [], []
        for row, (path, _) in enumerate(samples[start:start + BATCH], start):
            try:
                arrays.append(preprocess(path.read_bytes(), classifier.prep, MAX_PIXELS))
                rows.append(row)
            except ImageError as exc:
                unreadable.append(f"{path}: {exc.message}")
        if arrays:
            probabilities[rows] = classifier.probabilities(np.stack(arrays))
    return probabilities, unreadable


def best_three(probabilities: np.ndarray) -> np.ndarray:
    """Top-3 class indices per image, -1 for an unreadable one (counted as wrong)."""
    best3 = np.argsort(-np.nan_to_num(probabilities, nan=-1), axis=1)[:, :3]
    best3[np.isnan(probabilities).any(axis=1)] = -1
    return best3


def report(best3: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict:
    n = len(classes)
    matrix = np.zeros((n, n), dtype=int)
    for truth, guess in zip(labels, best3[:, 0]):
        if guess >= 0:
            matrix[truth, guess] += 1
    tp = np.diag(matrix)
    precision = tp / np.maximum(matrix.sum(axis=0), 1)
    counts = np.maximum(np.bincount(labels, minlength=n), 1)
    recall = tp / counts
    hit3 = (best3 == labels[:, None]).any(axis=1)
    top3 = np.bincount(labels, weights=hit3, minlength=n) / counts  # per class: the answer among the three shown
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    off = [(int(matrix[i, j]), classes[i], classes[j]) for i in range(n) for j in range(n) if i != j and matrix[i, j]]
    return {
        "images": int(len(labels)),
        "top1": float((best3[:, 0] == labels).mean()),
        "top3": float(hit3.mean()),
        "per_class": {c: {"precision": round(float(p), 4), "recall": round(float(r), 4), "f1": round(float(f), 4),
                          "top3": round(float(t), 4), "support": int(s)}
                      for c, p, r, f, t, s in zip(classes, precision, recall, f1, top3, matrix.sum(axis=1))},
        "most_confused": [{"true": t, "predicted": p, "count": k} for k, t, p in sorted(off, reverse=True)[:15]],
        "confusion_matrix": matrix.tolist(),
    }


def summary_markdown(result: dict, model: dict, data: Path) -> str:
    worst = sorted(result["per_class"].items(), key=lambda kv: kv[1]["f1"])[:10]
    lines = [f"# Evaluation of {model['name']} {model['version']} on `{data}`", "",
             f"- images: {result['images']}", f"- top-1: {result['top1']:.2%}", f"- top-3: {result['top3']:.2%}", "",
             "## Most confused pairs (true → predicted)", ""]
    lines += [f"- {p['true']} → {p['predicted']}: {p['count']}" for p in result["most_confused"]] or ["- none"]
    lines += ["", "## Lowest F1", "", "| class | precision | recall | F1 |", "|---|---|---|---|"]
    lines += [f"| {c} | {m['precision']:.2f} | {m['recall']:.2f} | {m['f1']:.2f} |" for c, m in worst]
    return "\n".join(lines) + "\n"


def evaluate(model_path: Path, data: Path, out: Path | None = None, threads: int = 2) -> dict:
    classifier = Classifier(str(model_path), str(model_path.with_suffix(".json")), threads)
    classes = classifier.card["classes"]
    samples = ServedImages(data, classes, classifier.prep).samples
    probabilities, unreadable = predict_probabilities(classifier, samples)
    best3, labels = best_three(probabilities), np.array([label for _, label in samples])
    result = report(best3, labels, classes)
    result["unreadable"] = unreadable
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps(result, indent=1))
        (out / "summary.md").write_text(summary_markdown(result, classifier.identity, data))
        plot_confusion(np.array(result["confusion_matrix"]), classes, out / "confusion.png")
        misses = [(path, f"{classes[truth]} → {classes[guess]} ({probabilities[i, guess]:.2f})" if guess >= 0 else "unreadable")
                  for i, ((path, truth), guess) in enumerate(zip(samples, best3[:, 0])) if guess != truth]
        plot_contact_sheet(misses, out / "misses.png", f"{len(misses)} misses of {len(samples)} (true → predicted)")
    return result


def record_metrics(model: Path, sets: dict[str, Path]) -> dict:
    """Measures the model on each named set and writes the figures into its card."""
    card_path = model.with_suffix(".json")
    metrics = {name: {key: (round(value, 4) if isinstance(value, float) else value) for key, value in result.items()
                      if key in ("images", "top1", "top3")}
               for name, result in ((name, evaluate(model, data)) for name, data in sets.items())}
    card = json.loads(card_path.read_text())
    card["metrics"] = card.get("metrics", {}) | metrics
    card_path.write_text(json.dumps(card, indent=1) + "\n")
    return metrics


def named_set(text: str) -> tuple[str, Path]:
    name, _, path = text.partition("=")
    if not path:
        raise argparse.ArgumentTypeError(f"expected NAME=FOLDER, got {text!r}")
    return name, Path(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path(Settings.from_env().model_path), help="default: the served model")
    parser.add_argument("--set", type=named_set, action="append", dest="sets", metavar="NAME=FOLDER",
                        help=f"a folder-per-class tree to measure on; default: {' '.join(f'{k}={v}' for k, v in DEFAULT_SETS.items())}")
    parser.add_argument("--reports", type=Path, default=Path("ml/reports"), help="each set's report goes to REPORTS/NAME")
    args = parser.parse_args()
    for name, data in args.sets or DEFAULT_SETS.items():
        try:
            result = evaluate(args.model, data, args.reports / name)
        except (ValueError, FileNotFoundError) as exc:  # e.g. a folder not named after a class: a message, not a traceback
            raise SystemExit(f"{name}: {exc}") from None
        print(f"{name}: top-1 {result['top1']:.2%}  top-3 {result['top3']:.2%}  on {result['images']} images -> {args.reports / name}")


if __name__ == "__main__":
    main()
