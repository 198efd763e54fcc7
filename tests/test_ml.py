"""ml/: training smoke test, export parity, card/model agreement, evaluation. Quick by design:
full training never runs here."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from common.model_card import load_card
from common.settings import REPO, Settings
from harness import DATA
from ml import calibrate, export
from ml.data import read_classes
from ml.evaluate import evaluate
from ml.train import Config, train
from worker.inference import calibrated

SHIPPED = sorted((REPO / "models").glob("*.onnx"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """One optimizer step on one image per class, then a resumed second epoch."""
    out = tmp_path_factory.mktemp("run")
    cfg = Config(data=str(DATA), out=str(out), epochs=1, low_res_epochs=1, limit_per_class=1, max_steps=1,
                 batch_size=8, workers=0)
    train(cfg)
    first = json.loads((out / "history.json").read_text())["history"]
    assert len(first) == 1 and (out / "last.pt").exists() and (out / "best.pt").exists()
    assert (out / "curves.png").stat().st_size > 0
    cfg.epochs, cfg.resume = 2, True
    train(cfg)
    history = json.loads((out / "history.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2], "resume must continue after the saved epoch"
    assert history[0] == first[0]
    return out / "best.pt"


def test_export_matches_pytorch_and_writes_card(checkpoint, tmp_path):
    model, ckpt = export.load_checkpoint(checkpoint)
    prep = export.checkpoint_preprocessing(ckpt)
    path = tmp_path / "tiny.onnx"
    export.export_onnx(model, 224, path)
    inputs = export.sample_inputs(DATA / "valid", prep, 8, step=50)
    assert export.check_parity(model, path, inputs) <= export.PARITY_TOLERANCE
    card = export.write_card(path, ckpt, export.run_history(checkpoint, ckpt), "tiny", "0.0.1", {})
    assert load_card(path.with_suffix(".json")) == card
    assert card["training"]["epochs_run"] == 2, "the card counts the whole run, not only up to the best epoch"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[0] == "batch"  # dynamic batch axis
    assert session.run(None, {"images": inputs[:3]})[0].shape == (3, 100)


def test_the_service_loads_the_int8_model_of_the_served_pair_as_the_export_rule_chooses():
    fp32, int8 = (load_card(REPO / "models" / name) for name in ("sports100-lite0-fused.json", "sports100-lite0-fused-int8.json"))
    assert Path(Settings().model_path).name == export.serving_choice(fp32, int8) == int8["file"]


@pytest.mark.parametrize("model", SHIPPED, ids=lambda p: p.name)
def test_shipped_card_agrees_with_model(model):
    card = load_card(model.with_suffix(".json"))
    assert card["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert card["classes"] == read_classes(DATA)
    size = card["preprocessing"]["input_size"]
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["batch", 3, size, size]
    probabilities = session.run(None, {"images": np.zeros((2, 3, size, size), np.float32)})[0]
    assert probabilities.shape == (2, len(card["classes"]))
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-3)
    assert card["metrics"]["valid"]["images"] == 500


def test_shipped_models_exist():
    assert (REPO / "models" / "sports100-lite0.onnx") in SHIPPED


def test_evaluate_on_a_small_tree(tmp_path):
    tree = tmp_path / "photos"
    for name in ("archery", "bowling", "surfing"):
        shutil.copytree(DATA / "valid" / name, tree / name)
    model = REPO / "models" / "sports100-lite0.onnx"
    result = evaluate(model, tree, tmp_path / "report")
    assert result["images"] == 15
    assert result["top1"] >= 0.8 and result["top3"] >= result["top1"]
    assert set(result["per_class"]) == set(load_card(model.with_suffix(".json"))["classes"])
    shown = [result["per_class"][name] for name in ("archery", "bowling", "surfing")]  # 5 photos each
    assert all(c["top3"] >= c["recall"] for c in shown)
    assert sum(c["top3"] for c in shown) / 3 == pytest.approx(result["top3"])
    for name in ("report.json", "summary.md", "confusion.png"):
        assert (tmp_path / "report" / name).stat().st_size > 0


def test_torchvision_b0_option_trains_one_step():
    """The original project's network, for machines that can download its weights (here: none)."""
    import torch

    from ml.model import build_model, freeze, set_train_mode

    model = build_model("efficientnet_b0", 100, 0.2, pretrained=False)
    freeze(model, 3)
    set_train_mode(model, 3)
    loss = torch.nn.functional.cross_entropy(model(torch.randn(2, 3, 96, 96)), torch.tensor([0, 1]))
    loss.backward()
    assert model.features[0][0].weight.grad is None  # frozen stem
    assert model.classifier[1].weight.grad is not None


# INT8 kernels differ by instruction set (with or without AVX512-VNNI), which moves a few borderline
# photos; FP32 gives the same answers everywhere.
@pytest.mark.parametrize("name, tolerance", [("sports100-lite0", 0.0), ("sports100-lite0-int8", 0.006),
                                             ("sports100-lite0-fused", 0.0), ("sports100-lite0-fused-int8", 0.006)])
def test_shipped_card_matches_a_fresh_evaluation_on_valid(name, tolerance):
    card = load_card(REPO / "models" / f"{name}.json")
    result = evaluate(REPO / "models" / f"{name}.onnx", DATA / "valid")
    assert result["images"] == card["metrics"]["valid"]["images"]
    assert abs(result["top1"] - card["metrics"]["valid"]["top1"]) <= tolerance + 1e-9
    assert abs(result["top3"] - card["metrics"]["valid"]["top3"]) <= tolerance + 1e-9


def test_the_threshold_is_the_lowest_confidence_whose_answers_meet_the_target():
    confidence = np.array([0.99, 0.95, 0.9, 0.8, 0.7, 0.6])
    correct = np.array([True, True, True, False, True, False])
    assert calibrate.choose_threshold(confidence, correct, target=0.75) == 0.7  # 4 of the top 5 right
    assert calibrate.choose_threshold(confidence, correct, target=1.0) == 0.9
    assert calibrate.choose_threshold(confidence, ~correct, target=0.99) == 1.0  # nothing qualifies


def test_temperature_scaling_keeps_the_ranking_and_the_shipped_calibration_is_complete():
    card = load_card(Path(Settings().model_path).with_suffix(".json"))
    calibration = card["calibration"]
    assert 0 < calibration["temperature"] and 0 < calibration["confident_threshold"] <= 1
    assert set(calibration["ece"]) == {"valid", "wild-dev"}
    probabilities = np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    scaled = calibrated(probabilities, calibration["temperature"])
    assert np.allclose(scaled.sum(axis=1), 1)
    assert (np.argsort(scaled, axis=1) == np.argsort(probabilities, axis=1)).all()
