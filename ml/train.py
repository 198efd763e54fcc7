"""Fine-tunes EfficientNet-Lite0 on the 100 Sports training split, on a CPU.

Recipe (why each part): the stem and first 5 blocks stay frozen (ImageNet edges/textures; they are
the costliest to back-propagate at high resolution), the rest fine-tunes with AdamW and a warmup +
cosine schedule; early epochs train at 192 px and the last ones at 224 px, the size it serves at
(progressive resizing: cheaper epochs first, then the train/test size gap closed); label
smoothing and class-weighted loss for the 59..191 images per class. Steps run under bfloat16 autocast
(faster steps on CPUs with AVX512-BF16 or AMX; `--no-amp` elsewhere), and an exponential moving
average of the weights is what gets validated and exported (smoother than the last step's weights at
no extra training cost). A checkpoint after every epoch lets `--resume` continue after an
interruption; the best epoch on valid is kept for export.

    python -m ml.train --data ../shared/data/sports100 --out ml/runs/lite0
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import ConcatDataset, DataLoader
from torchvision.transforms import v2
from tqdm import tqdm

from common.preprocess import Preprocessing
from ml.data import ExtraImages, ServedImages, TrainImages, class_weights, read_classes, train_transform
from ml.model import ARCHITECTURES, build_model, freeze, load_folded, set_train_mode
from ml.plots import plot_curves


@dataclass
class Config:
    data: str = "../shared/data/sports100"
    out: str = "ml/runs/lite0"
    arch: str = "efficientnet-lite0"  # or efficientnet_b0 (torchvision; its weights need a download)
    epochs: int = 12
    size: int = 224  # serving size; the last epochs train at it
    low_res: int = 192
    low_res_epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    dropout: float = 0.2
    label_smoothing: float = 0.1
    warmup_epochs: float = 0.5
    frozen_blocks: int = 5
    ema_decay: float = 0.998  # per step: the average spans the last ~500 steps (~2.5 epochs)
    amp: bool = True  # bfloat16 autocast
    patience: int = 5  # early stopping: epochs without a better valid top-1 (the cosine tail needs room)
    seed: int = 0
    workers: int = 1
    threads: int = 2
    limit_per_class: int = 0  # >0: a tiny subset, for smoke tests
    max_steps: int = 0  # >0: stop each epoch after this many steps, for smoke tests
    pretrained: bool = True
    resume: bool = False
    # Real-photo candidates (ml/EXPERIMENTS.md): extra training photos, closer crops, stronger augmentation.
    extra_data: str = ""  # a folder per class for some classes (e.g. ../shared/data/real-train); "" = none
    crop_scale: float = 0.25  # smallest random crop, as a share of the photo's area
    trivial_augment: bool = False
    erasing: float = 0.0  # random-erasing probability
    mix: float = 0.0  # probability that a batch is mixed by MixUp or CutMix
    wild: str = ""  # reported each epoch beside valid (e.g. ../shared/data/wild-dev); never used for selection
    # Continue from an exported model (its FP32 .onnx) instead of ImageNet: its batch norms come folded
    # into the convolutions, so they stay frozen (plain biases) and the run only adjusts what it learnt.
    init: str = ""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def epoch_size(cfg: Config, epoch: int) -> int:
    return cfg.low_res if epoch < cfg.low_res_epochs else cfg.size


def lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


@torch.no_grad()
def evaluate(model, loader, prefix: str = "valid") -> dict:
    model.eval()
    loss, top1, top3, n = 0.0, 0, 0, 0
    for images, labels in loader:
        logits = model(images)
        loss += F.cross_entropy(logits, labels, reduction="sum").item()
        best3 = logits.topk(3, dim=1).indices
        top1 += (best3[:, 0] == labels).sum().item()
        top3 += (best3 == labels[:, None]).any(dim=1).sum().item()
        n += len(labels)
    return {f"{prefix}_loss": loss / n, f"{prefix}_top1": top1 / n, f"{prefix}_top3": top3 / n}


def train_one_epoch(model, ema, loader, optimizer, scheduler, weights, cfg: Config, desc: str) -> dict:
    set_train_mode(model, cfg.frozen_blocks, batch_norms=not cfg.init)
    mixer = v2.RandomChoice([v2.MixUp(num_classes=len(weights)), v2.CutMix(num_classes=len(weights))])
    loss_sum, correct, n = 0.0, 0, 0
    bar = tqdm(loader, desc=desc, unit="batch", dynamic_ncols=True)
    for step, (images, labels) in enumerate(bar):
        if cfg.max_steps and step >= cfg.max_steps:
            break
        targets = labels
        if cfg.mix and random.random() < cfg.mix:
            images, targets = mixer(images, labels)  # soft targets; accuracy still counts the hard labels
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.amp):
            logits = model(images)
            loss = F.cross_entropy(logits, targets, weight=weights, label_smoothing=cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        ema.update_parameters(model)
        loss_sum += loss.item() * len(labels)
        correct += (logits.argmax(1) == labels).sum().item()
        n += len(labels)
        bar.set_postfix(loss=f"{loss_sum / n:.3f}", acc=f"{correct / n:.3f}", lr=f"{scheduler.get_last_lr()[0]:.1e}")
    return {"train_loss": loss_sum / max(n, 1), "train_acc": correct / max(n, 1)}


def save_checkpoint(path: Path, **state) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # atomic: an interruption never leaves a half-written checkpoint


def train(cfg: Config) -> dict:
    torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    data, out = Path(cfg.data), Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    classes = read_classes(data)
    arch = ARCHITECTURES[cfg.arch]
    prep = Preprocessing(cfg.size, arch.mean, arch.std)

    transform = train_transform(cfg.low_res, arch.mean, arch.std, cfg.crop_scale, cfg.trivial_augment, cfg.erasing)
    train_set = TrainImages(data / "train", classes, transform, cfg.limit_per_class)
    targets = list(train_set.targets)
    train_data = train_set
    if cfg.extra_data:  # same transform object, so progressive resizing reaches these photos too
        extra = ExtraImages(Path(cfg.extra_data), classes, transform)
        train_data, targets = ConcatDataset([train_set, extra]), targets + extra.targets
    valid_set = ServedImages(data / "valid", classes, prep, cfg.limit_per_class)
    valid_loader = DataLoader(valid_set, batch_size=cfg.batch_size, num_workers=cfg.workers)
    wild_loader = (DataLoader(ServedImages(Path(cfg.wild), classes, prep), batch_size=cfg.batch_size, num_workers=cfg.workers)
                   if cfg.wild else None)
    # The loss weights balance the classes again when extra photos make some more frequent.
    weights = class_weights(targets, len(classes))

    model = build_model(cfg.arch, len(classes), cfg.dropout, cfg.pretrained and not cfg.init)
    if cfg.init:
        load_folded(model, cfg.init).train()
    freeze(model, cfg.frozen_blocks)
    # use_buffers: the average carries batch-norm statistics too, so it can be validated as is.
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train_data) / cfg.batch_size)
    if cfg.max_steps:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps)
    warmup, total = int(cfg.warmup_epochs * steps_per_epoch), cfg.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, max(warmup, 1), total))

    start, history, best = 0, [], {"valid_top1": -1.0}
    if cfg.resume and (out / "last.pt").exists():
        ckpt = torch.load(out / "last.pt", weights_only=False)
        model.load_state_dict(ckpt["training_model"])
        ema.module.load_state_dict(ckpt["model"])
        ema.n_averaged.fill_(ckpt["ema_steps"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        start, history, best = ckpt["epoch"] + 1, ckpt["history"], ckpt["best"]
        torch.set_rng_state(ckpt["torch_rng"])
        print(f"resumed from {out / 'last.pt'} after epoch {start}")

    for epoch in range(start, cfg.epochs):
        size = epoch_size(cfg, epoch)
        train_set.set_size(size)
        generator = torch.Generator().manual_seed(cfg.seed + epoch)  # same order on resume
        loader = DataLoader(train_data, batch_size=cfg.batch_size, shuffle=True, generator=generator,
                            num_workers=cfg.workers, drop_last=len(train_data) > cfg.batch_size)
        began = time.time()
        stats = train_one_epoch(model, ema, loader, optimizer, scheduler, weights, cfg, f"epoch {epoch + 1}/{cfg.epochs} @{size}px")
        stats |= evaluate(ema.module, valid_loader)
        if wild_loader is not None:
            stats |= evaluate(ema.module, wild_loader, "wild")
        stats |= {"epoch": epoch + 1, "size": size, "seconds": round(time.time() - began, 1)}
        history.append(stats)
        print(json.dumps(stats))
        improved = stats["valid_top1"] > best["valid_top1"]
        if improved:
            best = stats
        # "model" is what export reads: the averaged weights.
        state = dict(model=ema.module.state_dict(), training_model=model.state_dict(),
                     ema_steps=ema.n_averaged.item(), optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                     epoch=epoch, history=history, best=best, torch_rng=torch.get_rng_state(),
                     config=dataclasses.asdict(cfg), classes=classes, architecture=cfg.arch,
                     preprocessing=prep.as_card())
        save_checkpoint(out / "last.pt", **state)
        if improved:
            save_checkpoint(out / "best.pt", **state)
        plot_curves(history, out / "curves.png")
        # The whole run so far (best.pt holds it only up to the best epoch); export's card reads it.
        (out / "history.json").write_text(json.dumps({"best": best, "history": history}, indent=2))
        if epoch + 1 - best["epoch"] >= cfg.patience:
            print(f"early stop: no better valid top-1 since epoch {best['epoch']}")
            break
    return best


def parse_args() -> Config:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for field in dataclasses.fields(Config):
        if field.type in ("bool", bool):
            parser.add_argument(f"--{field.name.replace('_', '-')}", action=argparse.BooleanOptionalAction, default=field.default)
        else:
            kind = {"int": int, "float": float, "str": str}[str(field.type)]
            parser.add_argument(f"--{field.name.replace('_', '-')}", type=kind, default=field.default)
    return Config(**vars(parser.parse_args()))


if __name__ == "__main__":
    print(json.dumps(train(parse_args())))
