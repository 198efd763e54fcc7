"""Pictures people would rather look at than read: training curves and confusion matrices."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; there is no screen
import matplotlib.pyplot as plt
import numpy as np


def plot_curves(history: list[dict], path: Path) -> None:
    epochs = [h["epoch"] for h in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4))
    loss_ax.plot(epochs, [h["train_loss"] for h in history], "o-", label="train (smoothed, weighted)")
    loss_ax.plot(epochs, [h["valid_loss"] for h in history], "o-", label="valid")
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy", title="Loss")
    acc_ax.plot(epochs, [h["train_acc"] for h in history], "o-", label="train top-1 (augmented)")
    acc_ax.plot(epochs, [h["valid_top1"] for h in history], "o-", label="valid top-1")
    acc_ax.plot(epochs, [h["valid_top3"] for h in history], "o-", label="valid top-3")
    acc_ax.set(xlabel="epoch", ylabel="accuracy", title="Accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_confusion(matrix: np.ndarray, classes: list[str], path: Path) -> None:
    """Row-normalized, so each class's recall reads off the diagonal whatever its size."""
    rows = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(16, 15))
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=6)
    ax.set_yticks(range(len(classes)), classes, fontsize=6)
    ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix (row-normalized)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_contact_sheet(items: list[tuple[Path, str]], path: Path, title: str, columns: int = 8, limit: int = 48) -> None:
    """Thumbnails with a caption each: the misses at a glance."""
    from PIL import Image

    shown = items[:limit]
    rows = max(1, -(-len(shown) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.4 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (image_path, caption) in zip(axes.flat, shown):
        with Image.open(image_path) as image:
            image.thumbnail((200, 200))
            ax.imshow(image.convert("RGB"))
        ax.set_title(caption, fontsize=6.5, wrap=True)
    fig.suptitle(title + (f" (first {limit})" if len(items) > limit else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=60)
    plt.close(fig)


def plot_risk_coverage(curves: dict[str, tuple], threshold: float, target: float, path: Path) -> None:
    """Accuracy of the answers kept against the share kept, as the confidence threshold falls."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, (thresholds, accuracy, coverage) in curves.items():
        ax.plot(coverage, accuracy, label=name)
        kept = thresholds >= threshold
        if kept.any():
            ax.plot(coverage[kept][-1], accuracy[kept][-1], "o", color=ax.lines[-1].get_color())
    ax.axhline(target, ls="--", color="grey", label=f"target {target:.0%}")
    ax.set(xlabel="coverage (share of photos answered as confident)", ylabel="accuracy of confident answers",
           title=f"Risk-coverage; dots: threshold {threshold:.2f}", ylim=(0.5, 1.01))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
