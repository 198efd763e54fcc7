"""ml/probe.py, ml/wise.py, ml/fuse.py: the served model's folded ONNX weights read back into
PyTorch, paired with the ImageNet network's, and fused with it into one graph. Quick: no features
are extracted and no probe is fitted on real data."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from common.model_card import load_card
from common.preprocess import Preprocessing
from common.settings import REPO
from harness import DATA
from ml import export
from ml.fuse import Fused
from ml.model import WithSoftmax, build_model, load_folded
from ml.probe import exported_backbone, fit_probe, imagenet_backbone, log_probs, pooled, pooled_session, top13
from ml.wise import imagenet_graph, interpolated, paired_weights

FINETUNED_FP32 = REPO / "models" / "sports100-lite0.onnx"  # 1.0.0: the network ml.fuse and ml.wise start from


@pytest.fixture(scope="module")
def inputs() -> np.ndarray:
    prep = Preprocessing.from_card(load_card(FINETUNED_FP32.with_suffix(".json")))
    return export.sample_inputs(DATA / "valid", prep, 6, step=80)


@pytest.fixture(scope="module")
def served(inputs) -> np.ndarray:
    return ort.InferenceSession(str(FINETUNED_FP32), providers=["CPUExecutionProvider"]).run(None, {"images": inputs})[0]


def finetuned() -> torch.nn.Module:
    return load_folded(build_model("efficientnet-lite0", 100, 0.0, pretrained=False), str(FINETUNED_FP32))


def test_the_served_weights_load_back_into_pytorch(inputs, served):
    with torch.no_grad():
        probabilities = WithSoftmax(finetuned()).eval()(torch.from_numpy(inputs)).numpy()
    assert np.abs(probabilities - served).max() <= export.PARITY_TOLERANCE


def test_a_fused_graph_keeps_the_served_names_and_at_weight_zero_answers_as_the_served_model(tmp_path, inputs, served):
    imagenet = imagenet_backbone("efficientnet-lite0", None)
    imagenet._fc = torch.nn.Linear(1280, 100)
    fused = Fused(finetuned(), imagenet, 0.0).eval()
    path = tmp_path / "fused.onnx"
    export.export_onnx(fused, 224, path)
    assert export.check_parity(fused, path, inputs) <= export.PARITY_TOLERANCE
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"] and [o.name for o in session.get_outputs()] == ["probabilities"]
    assert np.abs(session.run(None, {"images": inputs})[0] - served).max() <= 1e-4


def test_wise_pairs_every_weight_and_alpha_zero_is_the_served_model(inputs, served):
    graph = onnx.load(str(FINETUNED_FP32))
    pairs = paired_weights(graph, imagenet_graph(torch.nn.Linear(1280, 100), 224))  # checks the frozen layers agree
    assert len(pairs) == 2 * 49 + 2  # 49 convolutions and the classifier, weight and bias each
    session = ort.InferenceSession(interpolated(graph, pairs, 0.0, 0.0), providers=["CPUExecutionProvider"])
    assert np.abs(session.run(None, {"images": inputs})[0] - served).max() <= 1e-6


def test_the_probe_reads_raw_features():
    """The standardization is folded into the layer: it scores unscaled features as fitted."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    features = (rng.normal(size=(60, 8)) + 4 * np.eye(3, 8)[labels]) * 50 + 100
    layer = fit_probe(features.astype(np.float32), labels, 3, l2=1e-3, steps=100)
    assert top13(log_probs(layer, features.astype(np.float32)), labels) == (1.0, 1.0)


def test_the_exported_imagenet_backbone_reads_the_same_features_as_pytorch(tmp_path, inputs):
    """ml.probe reads the ImageNet features through ONNX Runtime when it can: the same numbers."""
    model = imagenet_backbone("efficientnet-lite0", None)
    path = exported_backbone(model, 224, tmp_path)
    session, output = pooled_session(path)
    read = session.run([output], {"images": inputs})[0]
    with torch.no_grad():
        expected = pooled(model, torch.from_numpy(inputs), 224).numpy()
    assert np.abs(read - expected).max() <= 1e-4
    assert exported_backbone(model, 224, tmp_path) == path  # exported once
