"""Evaluates an exported ONNX model on any folder-per-class image tree, through the worker's own
code (its preprocessing and its ONNX Runtime session), so the figures are what the service gives.

    python -m ml.evaluate --model models/sports100-lite0-int8.onnx --data ../shared/data/sports100/valid --out ml/reports/valid

Writes report.json (top-1, top-3, per-class precision/recall/F1, most confused pairs),
summary.md and confusion.png.
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
from ml.plots import plot_confusion
from worker.inference import Classifier

BATCH = 32


def predict_all(classifier: Classifier, samples: list[tuple[Path, int]]) -> tuple[np.ndarray, list[str]]:
    """Top-3 class indices per image (-1 for an unreadable file, counted as wrong)."""
    classes = classifier.card["classes"]
    best3 = np.full((len(samples), 3), -1)
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
            for row, top3 in zip(rows, classifier.top3(np.stack(arrays))):
                best3[row] = [classes.index(p["label"]) for p in top3]
    return best3, unreadable


def report(best3: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict:
    n = len(classes)
    matrix = np.zeros((n, n), dtype=int)
    for truth, guess in zip(labels, best3[:, 0]):
        if guess >= 0:
            matrix[truth, guess] += 1
    tp = np.diag(matrix)
    precision = tp / np.maximum(matrix.sum(axis=0), 1)
    recall = tp / np.maximum(np.bincount(labels, minlength=n), 1)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    off = [(int(matrix[i, j]), classes[i], classes[j]) for i in range(n) for j in range(n) if i != j and matrix[i, j]]
    return {
        "images": int(len(labels)),
        "top1": float((best3[:, 0] == labels).mean()),
        "top3": float((best3 == labels[:, None]).any(axis=1).mean()),
        "per_class": {c: {"precision": round(float(p), 4), "recall": round(float(r), 4), "f1": round(float(f), 4),
                          "support": int(s)} for c, p, r, f, s in zip(classes, precision, recall, f1, matrix.sum(axis=1))},
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
    best3, unreadable = predict_all(classifier, samples)
    result = report(best3, np.array([label for _, label in samples]), classes)
    result["unreadable"] = unreadable
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps(result, indent=1))
        (out / "summary.md").write_text(summary_markdown(result, classifier.identity, data))
        plot_confusion(np.array(result["confusion_matrix"]), classes, out / "confusion.png")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path(Settings.from_env().model_path), help="default: the served model")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/sports100/valid"))
    parser.add_argument("--out", type=Path, default=Path("ml/reports/valid"))
    args = parser.parse_args()
    try:
        result = evaluate(args.model, args.data, args.out)
    except ValueError as exc:  # e.g. a folder not named after a class: a message, not a traceback
        raise SystemExit(str(exc)) from None
    print(f"top-1 {result['top1']:.2%}  top-3 {result['top3']:.2%}  on {result['images']} images -> {args.out}")


if __name__ == "__main__":
    main()
