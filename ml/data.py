"""The 100 Sports folders as PyTorch datasets: augmented for training, served-as-is for validation."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import datasets, transforms
from torchvision.transforms import v2

from common.preprocess import Preprocessing, preprocess
from common.settings import Settings

# Validation decodes exactly as the service does, with the service's bound against absurd files.
MAX_PIXELS = Settings.max_pixels


def read_classes(data_dir: Path) -> list[str]:
    return [line.strip() for line in (data_dir / "classes.txt").read_text().splitlines() if line.strip()]


def train_transform(size: int, mean, std, crop_scale: float = 0.25, trivial_augment: bool = False,
                    erasing: float = 0.0) -> transforms.Compose:
    """Augmentation aimed at real photos: other framings and aspect ratios (random resized crops
    within 3/4..4/3, the range serving squeezes into), mirror images, other light and colour, a
    camera held slightly askew, black-and-white photos, and soft focus and heavy compression
    (`python -m ml.robustness` found blur and low JPEG quality cost the most without them).
    A small `crop_scale` shows close-ups (the ball alone is still the sport); TrivialAugment and
    random erasing are the real-photo candidates measured in ml/EXPERIMENTS.md."""
    return transforms.Compose([
        transforms.RandomResizedCrop(size, scale=(crop_scale, 1.0), ratio=(3 / 4, 4 / 3)),
        transforms.RandomHorizontalFlip(),
        transforms.RandomApply([transforms.RandomRotation(10)], p=0.3),
        transforms.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.03),
        transforms.RandomGrayscale(p=0.1),
        transforms.RandomApply([transforms.GaussianBlur(9, sigma=(0.1, 2.0))], p=0.2),
        transforms.RandomApply([v2.JPEG((15, 95))], p=0.2),
        *([transforms.TrivialAugmentWide()] if trivial_augment else []),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
        *([transforms.RandomErasing(p=erasing, value="random")] if erasing else []),
    ])


def _rgb_loader(path: str) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")  # a few training images are greyscale


class TrainImages(datasets.ImageFolder):
    """ImageFolder whose class order is checked against classes.txt (the data set's own ids)."""

    def __init__(self, root: Path, classes: list[str], transform, limit_per_class: int = 0):
        super().__init__(str(root), transform=transform, loader=_rgb_loader)
        if self.classes != classes:
            raise ValueError(f"{root} folders do not match classes.txt")
        if limit_per_class:
            seen: Counter = Counter()
            self.samples = [s for s in self.samples if (seen.update([s[1]]) or seen[s[1]] <= limit_per_class)]
            self.targets = [label for _, label in self.samples]

    def set_size(self, size: int) -> None:
        """Progressive resizing: later epochs train at a larger size."""
        for t in self.transform.transforms:
            if isinstance(t, transforms.RandomResizedCrop):
                t.size = (size, size)


def folder_samples(root: Path, classes: list[str], limit_per_class: int = 0) -> list[tuple[Path, int]]:
    """(file, class id) for a tree with one folder per class, named exactly as in classes.txt; it
    may hold only some of the classes."""
    index = {name: i for i, name in enumerate(classes)}
    samples = []
    for folder in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        if folder.name not in index:
            raise ValueError(f"{folder.name!r} is not one of the model's classes")
        files = sorted(f for f in folder.iterdir() if f.is_file())
        samples += [(f, index[folder.name]) for f in (files[:limit_per_class] if limit_per_class else files)]
    return samples


class ExtraImages(Dataset):
    """Photos for some of the classes, augmented like the training split."""

    def __init__(self, root: Path, classes: list[str], transform):
        self.transform = transform
        self.samples = folder_samples(root, classes)
        self.targets = [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[i]
        return self.transform(_rgb_loader(path)), label


class ServedImages(Dataset):
    """Any folder-per-class tree, read as raw bytes and prepared by the service's own preprocessing."""

    def __init__(self, root: Path, classes: list[str], prep: Preprocessing, limit_per_class: int = 0):
        self.prep = prep
        self.samples = folder_samples(root, classes, limit_per_class)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[i]
        return torch.from_numpy(preprocess(path.read_bytes(), self.prep, MAX_PIXELS)), label


def class_weights(targets: list[int], num_classes: int) -> torch.Tensor:
    """Loss weights inversely proportional to class frequency (mean 1): a class with 59 images
    counts as much in the loss as one with 191."""
    counts = torch.bincount(torch.tensor(targets), minlength=num_classes).float().clamp(min=1)
    weights = counts.sum() / (num_classes * counts)
    return weights / weights.mean()
