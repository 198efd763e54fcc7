"""The model as the worker runs it: one ONNX Runtime session, images in, top-3 predictions out."""
from __future__ import annotations

import hashlib
import time

import numpy as np
import onnxruntime as ort

from common.model_card import load_card, model_identity
from common.preprocess import Preprocessing
from common.settings import cores
from worker import metrics


def calibrated(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature scaling of softmax outputs: the same ranking, probabilities that mean what they say."""
    logits = np.log(np.clip(probabilities, 1e-12, 1)) / temperature
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def default_threads(processes: int) -> int:
    """Threads per session such that all worker processes together use each core once."""
    return max(1, cores() // max(1, processes))


class Classifier:
    def __init__(self, model_path: str, card_path: str, threads: int):
        self.card = load_card(card_path)
        with open(model_path, "rb") as f:
            if hashlib.sha256(f.read()).hexdigest() != self.card["sha256"]:
                raise ValueError(f"{model_path} is not the model its card {card_path} describes (sha256 differs)")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: the exporter's unused ReLU6 constants draw a warning each
        # No busy-waiting between runs: a spinning ORT thread takes the core that decoding, Redis
        # and the web process need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.prep = Preprocessing.from_card(self.card)
        self.identity = model_identity(self.card)
        # A card without a calibration (older models) keeps the raw probabilities and calls every answer confident.
        calibration = self.card.get("calibration", {})
        self.temperature = float(calibration.get("temperature", 1.0))
        self.threshold = float(calibration.get("confident_threshold", 0.0))

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, H, W) float32 -> (N, classes): the model's own softmax output."""
        return self.session.run(None, {self.input_name: batch})[0]

    def predict(self, batch: np.ndarray) -> list[dict]:
        """(N, 3, H, W) float32 -> for each image its three most likely sports (most likely first, with
        calibrated confidences) and whether the first is sure enough to state without a "maybe"."""
        started = time.perf_counter()
        probabilities = calibrated(self.probabilities(batch), self.temperature)
        metrics.record_inference(self.identity, len(batch), time.perf_counter() - started)
        best = np.argsort(-probabilities, axis=1)[:, :3]
        return [
            {"top3": [{"label": self.card["classes"][c], "display_name": self.card["display_names"][c],
                       "confidence": round(float(p[c]), 6)} for c in row],
             "confident": bool(p[row[0]] >= self.threshold)}
            for p, row in zip(probabilities, best)
        ]
