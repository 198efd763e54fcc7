"""WiSE-FT on the exported model: the fine-tuned weights interpolated toward the ImageNet weights
(with a linear probe as their 100-class head), one network of the served model's size and cost.

    python -m ml.wise --cache /tmp/mlfeat    # needs the cached Lite0 features of `python -m ml.probe`
    python -m ml.wise --toward runs/more/sports100-lite0.onnx    # toward another fine-tune of it

With `--toward`, the other end is not ImageNet but another export of the same network (a fine-tune
continued from this one, `ml.train --init`): averaging the two trades what each is better at.

There is no PyTorch checkpoint of the served model, only its FP32 ONNX file, whose batch norms the
exporter folded into the convolutions. So the ImageNet network, given the probe's head, is exported
through the same `ml.export.export_onnx`: the two graphs then have the same convolutions in the same
order, folded the same way, and their weights pair up one to one. The stem and first blocks, frozen
during fine-tuning, must come out equal in both: that checks the pairing.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import numpy_helper

from common.model_card import load_card
from common.preprocess import Preprocessing, preprocess
from ml.data import MAX_PIXELS, folder_samples
from ml.export import export_onnx
from ml.model import WithSoftmax, weight_names
from ml.probe import best_probe, imagenet_backbone, top13

FROZEN_CONVS = 1 + 2 + 3 * 4  # the stem, block 0 (depthwise + project), blocks 1-4 (expand, depthwise, project)


def imagenet_graph(head: torch.nn.Linear, size: int) -> onnx.ModelProto:
    """The ImageNet Lite0 with `head` as its classifier, exported like the fine-tuned model."""
    model = imagenet_backbone("efficientnet-lite0", None)
    model._fc = head
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "imagenet.onnx"
        export_onnx(WithSoftmax(model).eval(), size, path)
        return onnx.load(str(path))


def paired_weights(finetuned: onnx.ModelProto, imagenet: onnx.ModelProto) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(fine-tuned initializer name, its array, the ImageNet array in the same place)."""
    arrays = [{i.name: numpy_helper.to_array(i) for i in m.graph.initializer} for m in (finetuned, imagenet)]
    names = [weight_names(m) for m in (finetuned, imagenet)]
    if len(names[0]) != len(names[1]):
        raise SystemExit(f"the graphs differ: {len(names[0])} vs {len(names[1])} weights")
    pairs = [(a, arrays[0][a], arrays[1][b]) for a, b in zip(*names)]
    frozen = max(float(np.abs(f - i).max()) for _, f, i in pairs[:2 * FROZEN_CONVS])
    if frozen > 1e-5:
        raise SystemExit(f"the frozen layers differ by {frozen:.2e}: the weights do not pair up")
    return pairs


def interpolated(finetuned: onnx.ModelProto, pairs: list, alpha: float, head_alpha: float) -> bytes:
    """The fine-tuned graph with weights (1 - alpha) * fine-tuned + alpha * ImageNet (the head:
    head_alpha toward the probe's), serialized for ONNX Runtime."""
    model = onnx.ModelProto()
    model.CopyFrom(finetuned)
    mixed = {name: (1 - a) * f + a * i for (name, f, i), a in
             zip(pairs, [alpha] * (len(pairs) - 2) + [head_alpha] * 2)}
    for initializer in model.graph.initializer:
        if initializer.name in mixed:
            initializer.CopyFrom(numpy_helper.from_array(mixed[initializer.name].astype(np.float32), initializer.name))
    return model.SerializeToString()


def served_inputs(data: Path, classes: list[str], prep: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    samples = folder_samples(data, classes)
    return (np.stack([preprocess(path.read_bytes(), prep, MAX_PIXELS) for path, _ in samples]),
            np.array([label for _, label in samples]))


def log_probabilities(graph: bytes, inputs: np.ndarray, threads: int) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    out = np.concatenate([session.run(None, {"images": inputs[i:i + 32]})[0] for i in range(0, len(inputs), 32)])
    return np.log(np.clip(out, 1e-12, 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, help="where ml.probe cached the Lite0 features (without --toward)")
    parser.add_argument("--toward", type=Path, help="another FP32 export of the same network to interpolate toward")
    parser.add_argument("--model", type=Path, default=Path("models/sports100-lite0.onnx"), help="the fine-tuned FP32 model")
    parser.add_argument("--valid", type=Path, default=Path("../shared/data/sports100/valid"))
    parser.add_argument("--wild", type=Path, default=Path("../shared/data/wild-dev"))
    parser.add_argument("--alphas", type=float, nargs="+", default=[0, 0.1, 0.2, 0.3, 0.4, 0.5, 1])
    parser.add_argument("--head-alphas", type=float, nargs="+", help="default: each alpha itself")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    card = load_card(str(args.model.with_suffix(".json")))
    classes, prep = card["classes"], Preprocessing.from_card(card)
    finetuned = onnx.load(str(args.model))
    if args.toward:
        other, what = onnx.load(str(args.toward)), f"toward {args.toward.parent.name}/{args.toward.name}"
    else:
        train, valid = (dict(np.load(args.cache / "efficientnet-lite0" / f"{n}.npz")) for n in ("train", "valid"))
        head, l2 = best_probe(train, valid, "features", len(classes))
        other, what = imagenet_graph(head, prep.size), f"probe l2 {l2:g}"
    pairs = paired_weights(finetuned, other)
    sets = {name: served_inputs(folder, classes, prep) for name, folder in (("valid", args.valid), ("wild-dev", args.wild))}
    for alpha, head_alpha in zip(args.alphas, args.head_alphas or args.alphas):
        graph = interpolated(finetuned, pairs, alpha, head_alpha)
        cells = [top13(log_probabilities(graph, x, args.threads), y) for x, y in sets.values()]
        print(f"| WiSE-FT alpha {alpha:g}, head {head_alpha:g} ({what}) | "
              + " | ".join(f"{100 * a:.1f} / {100 * b:.1f}" for a, b in cells) + " |", flush=True)


if __name__ == "__main__":
    main()
