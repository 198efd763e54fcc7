"""Data analysis of the 100 Sports images (replaces the old notebook): class balance, image sizes and
modes, brightness and sharpness, samples and outliers. Writes PNGs to --out and a summary to ml/EDA.md,
so the numbers behind the training recipe are regenerated, never retyped.

    python -m ml.eda --data ../shared/data/sports100 --out ml/reports/eda [--limit 5]
"""
from __future__ import annotations

import argparse
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ml.data import read_classes
from ml.plots import plt  # importing ml.plots selects the Agg backend

SUMMARY = Path(__file__).parent / "EDA.md"
SPLITS = ("train", "valid")
PERCENTILES = (1, 5, 25, 50, 75, 95, 99)
# Photo grids as JPEG: as PNG the 100-photo grid would weigh several times more in the repository.
FIGURES = ("class_balance.png", "image_stats.png", "samples.jpg", "blurriest.jpg")
GREY_SPREAD = 1.0  # colour below this counts as black and white: JPEG chroma noise alone stays under it


@dataclass
class ImageInfo:
    path: Path
    split: str
    label: str
    size: str  # "WxH"
    mode: str
    bytes: int
    brightness: float  # mean luminance, 0-255
    colour: float  # mean spread between R, G and B: about 0 for a black-and-white photo, whatever its mode
    blur: float  # Laplacian variance: low means few sharp edges, i.e. blurry (or flat)

    @property
    def black_and_white(self) -> bool:
        return self.colour < GREY_SPREAD


def laplacian_variance(gray: np.ndarray) -> float:
    """The usual cheap sharpness score; the 4-neighbour kernel on the interior, so no padding effects."""
    g = gray.astype(np.float32)
    laplacian = g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4 * g[1:-1, 1:-1]
    return float(laplacian.var())


def measure(path: Path, split: str, label: str) -> ImageInfo:
    with Image.open(path) as image:
        gray = np.asarray(image.convert("L"))  # ITU-R 601 luma, whatever the stored mode
        rgb = np.asarray(image.convert("RGB"), dtype=np.int16)
        return ImageInfo(path, split, label, f"{image.width}x{image.height}", image.mode, path.stat().st_size,
                         float(gray.mean()), float(np.ptp(rgb, axis=2).mean()), laplacian_variance(gray))


def scan(data: Path, classes: list[str], limit: int) -> list[ImageInfo]:
    jobs = []
    for split in SPLITS:
        for label in classes:
            files = sorted(f for f in (data / split / label).iterdir() if f.is_file())
            jobs += [(f, split, label) for f in (files[:limit] if limit else files)]
    return [measure(*job) for job in tqdm(jobs, desc="images", unit="img", dynamic_ncols=True)]


def column(infos: list[ImageInfo], split: str, key: str) -> np.ndarray:
    return np.array([getattr(i, key) for i in infos if i.split == split])


def save(fig, path: Path) -> None:
    fig.savefig(path, dpi=100, pil_kwargs={"quality": 80} if path.suffix == ".jpg" else None)
    plt.close(fig)


def plot_class_balance(counts: Counter, path: Path) -> None:
    names = sorted(counts, key=counts.get)  # barh draws bottom-up: the largest class ends on top
    fig, ax = plt.subplots(figsize=(9, 20), layout="constrained")  # tall, so all 100 names stay readable
    ax.barh(names, [counts[n] for n in names], color="steelblue")
    mean = np.mean(list(counts.values()))
    ax.axvline(mean, color="crimson", ls="--", label=f"mean {mean:.0f}")
    ax.tick_params(axis="y", labelsize=8)
    ax.margins(y=0.005)
    ax.set(xlabel="training images", title="Training images per class (valid: 5 per class)")
    ax.legend(loc="lower right")
    save(fig, path)


def plot_image_stats(infos: list[ImageInfo], path: Path) -> None:
    fig, (bright_ax, blur_ax, kind_ax) = plt.subplots(1, 3, figsize=(17, 4.5), layout="constrained")
    for split in SPLITS:
        style = dict(bins=50, density=True, alpha=0.55, label=split)  # density: valid is far smaller
        bright_ax.hist(column(infos, split, "brightness"), **style)
        blur_ax.hist(np.log10(1 + column(infos, split, "blur")), **style)  # 1+: a flat image scores 0
    bright_ax.set(xlabel="mean luminance (0-255)", title="Brightness")
    blur_ax.set(xlabel="log10(1 + Laplacian variance)", title="Sharpness (left = blurrier)")
    kinds = Counter(f"{i.size} {i.mode}{' b&w' if i.black_and_white else ''}" for i in infos).most_common(10)
    kind_ax.bar_label(kind_ax.barh(*zip(*kinds[::-1]), color="gray"), padding=3)  # counts: rare kinds stay visible
    kind_ax.set(xlabel="images", title="Size and mode, both splits (b&w: black and white)")
    for ax in (bright_ax, blur_ax):
        ax.legend()
    save(fig, path)


def plot_tiles(tiles: list[tuple[Path, str]], cols: int, title: str, path: Path) -> None:
    rows = -(-len(tiles) // cols)
    # ~160 px a tile: enough to tell the sport, and a 10x10 grid stays a few MB
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.9 * rows), squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")  # also blanks any cells left over after the last tile
    for ax, (image_path, caption) in zip(axes.flat, tiles):
        with Image.open(image_path) as image:
            ax.imshow(image.convert("RGB"))
        ax.set_title(caption, fontsize=8)
    fig.suptitle(title, fontsize=14)
    save(fig, path)


def plot_samples(train: list[ImageInfo], classes: list[str], path: Path) -> None:
    first = {i.label: i.path for i in reversed(train)}  # reversed: each class's first file wins
    plot_tiles([(first[c], c) for c in classes if c in first], 10, "One training image per class", path)


def plot_outliers(train: list[ImageInfo], path: Path) -> None:
    blurriest = sorted(train, key=lambda i: i.blur)[:12]
    darkest = sorted(train, key=lambda i: i.brightness)[:12]
    tiles = [(i.path, f"{i.label}\nblur {i.blur:.0f}") for i in blurriest]
    tiles += [(i.path, f"{i.label}\nluma {i.brightness:.0f}") for i in darkest]
    plot_tiles(tiles, 6, "Training images: 12 blurriest (top rows), 12 darkest (bottom rows)", path)


def balance_findings(infos: list[ImageInfo], counts: Counter) -> list[str]:
    """What shapes how the model is trained and judged, phrased from this run's numbers."""
    least, second, *_, most = sorted(counts.values())
    per_valid = sum(i.split == "valid" for i in infos) // len(counts)
    odd_sizes = sum(i.size != "224x224" for i in infos)
    return [
        f"Training classes hold {least}-{most} images, a {most / max(least, 1):.1f}x imbalance (the next-smallest "
        f"has {second}); ml/train.py weights the loss by inverse class frequency (`ml.data.class_weights`).",
        f"Valid is balanced ({per_valid} per class), so its top-1 weighs every class equally, but one image "
        f"moves a class's valid recall by {100 / max(per_valid, 1):.0f} points: per-class valid numbers are noisy.",
        f"{odd_sizes} images are not 224x224." if odd_sizes else f"All {len(infos)} images are 224x224, the "
        "serving size, so valid never exercises the service's crop and resize of other shapes.",
    ]


def quality_findings(infos: list[ImageInfo]) -> list[str]:
    grey = Counter(i.label for i in infos if i.black_and_white)
    median = {(s, k): np.median(column(infos, s, k)) for s in SPLITS for k in ("bytes", "blur")}
    blur_p1 = np.percentile(column(infos, "train", "blur"), 1)
    blurry = Counter(i.label for i in infos if i.split == "train" and i.blur < blur_p1)
    return [
        f"{sum(grey.values())} images ({100 * sum(grey.values()) / len(infos):.1f}%) are black and white, "
        f"{sum(i.mode == 'L' for i in infos)} of them stored as mode L; most in "
        f"{', '.join(c for c, _ in grey.most_common(3))}. Training's RandomGrayscale(p=0.05) adds more.",
        f"Train was re-encoded at JPEG quality 85: median file {median['train', 'bytes'] / 1024:.1f} KiB vs "
        f"{median['valid', 'bytes'] / 1024:.1f} KiB in valid, median blur score {median['train', 'blur']:.0f} "
        f"vs {median['valid', 'blur']:.0f}.",
        f"The blurriest 1% of training images ({sum(blurry.values())}) cluster in a few classes: "
        f"{', '.join(f'{c} ({n})' for c, n in blurry.most_common(3))}; see blurriest.png before calling them defects.",
    ]


def table(header: list[str], rows: list[list]) -> str:
    return "\n".join("| " + " | ".join(map(str, row)) + " |" for row in [header, ["---"] * len(header), *rows])


def counts_section(infos: list[ImageInfo], counts: Counter) -> str:
    ranked = counts.most_common()
    listed = lambda pairs: ", ".join(f"{name} ({n})" for name, n in pairs)  # noqa: E731
    return (f"## Counts\n\n{table(['split', 'images'], [[s, sum(i.split == s for i in infos)] for s in SPLITS])}\n\n"
            f"Training images per class: min {ranked[-1][1]}, max {ranked[0][1]}, "
            f"mean {np.mean(list(counts.values())):.1f}.\n\n"
            f"- Most frequent: {listed(ranked[:5])}\n- Least frequent: {listed(ranked[:-6:-1])}")


def kinds_section(infos: list[ImageInfo]) -> str:
    kinds = sorted(Counter((i.split, i.size, i.mode) for i in infos).items())
    grey = ", ".join(f"{s} {sum(i.black_and_white for i in infos if i.split == s)}" for s in SPLITS)
    return (f"## Image sizes and modes\n\n{table(['split', 'size', 'mode', 'images'], [[*k, n] for k, n in kinds])}"
            f"\n\nBlack-and-white images (mean R/G/B spread under {GREY_SPREAD}, whatever the mode): {grey}.")


def stats_section(infos: list[ImageInfo]) -> str:
    rows = [[f"{split} {key}", *(f"{v:.1f}" for v in np.percentile(column(infos, split, key), PERCENTILES))]
            for split in SPLITS for key in ("brightness", "blur")]
    header = ["measure", *(f"p{p}" for p in PERCENTILES)]
    return ("## Brightness and sharpness (percentiles)\n\nBrightness is the mean luminance (0-255); blur is the "
            f"variance of a 3x3 Laplacian (lower is blurrier).\n\n{table(header, rows)}")


def summary(infos: list[ImageInfo], counts: Counter, figures: Path, limit: int) -> str:
    subset = f" (first {limit} images per class)" if limit else ""
    bullets = "\n".join(f"- {line}" for line in balance_findings(infos, counts) + quality_findings(infos))
    images = "\n".join(f"![{Path(name).stem.replace('_', ' ')}]({figures.as_posix()}/{name})" for name in FIGURES)
    return "\n\n".join([f"# Data analysis: 100 Sports\n\nGenerated by `python -m ml.eda`{subset}; rerun, don't edit.",
                         counts_section(infos, counts), kinds_section(infos), stats_section(infos),
                         f"## Findings\n\n{bullets}", f"## Figures\n\n{images}"]) + "\n"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/sports100"))
    parser.add_argument("--out", type=Path, default=Path("ml/reports/eda"))
    parser.add_argument("--limit", type=int, default=0, help="read only the first N images per class (0: all)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    classes = read_classes(args.data)
    infos = scan(args.data, classes, args.limit)
    train = [i for i in infos if i.split == "train"]
    tally = Counter(i.label for i in train)
    counts = Counter({c: tally[c] for c in classes})  # every class, even one left empty
    balance, stats, samples, outliers = (args.out / name for name in FIGURES)
    plot_class_balance(counts, balance)
    plot_image_stats(infos, stats)
    plot_samples(train, classes, samples)
    plot_outliers(train, outliers)
    figures = Path(os.path.relpath(args.out.resolve(), SUMMARY.parent))  # links relative to EDA.md
    SUMMARY.write_text(summary(infos, counts, figures, args.limit))
    print(f"wrote {SUMMARY} and {len(FIGURES)} figures in {args.out}")


if __name__ == "__main__":
    main()
