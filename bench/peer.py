"""The peer: the same model behind a server that batches requests, as a yardstick for issue 14.

LitServe (FastAPI/uvicorn) with dynamic batching across requests: 2 inference processes x 1 ONNX
Runtime thread, batches of up to 16 requests gathered for at most 5 ms. It decodes with the
project's own `common.preprocess` and runs the worker's `Classifier`, so the comparison measures
how work reaches the model, not the model. One image per `POST /predict` (part `file`); the answer
is that image's top 3. Run as `python -m bench.peer --port P --model PATH`; bench.stack starts it.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import litserve as ls
import numpy as np

from common.preprocess import preprocess
from common.settings import Settings
from worker.inference import Classifier

MAX_BATCH_SIZE, BATCH_TIMEOUT_S, PROCESSES, THREADS = 16, 0.005, 2, 1


class PeerAPI(ls.LitAPI):
    """One request, one image; LitServe gathers requests into batches between decode and predict."""

    def __init__(self, model_path: str):
        super().__init__(max_batch_size=MAX_BATCH_SIZE, batch_timeout=BATCH_TIMEOUT_S)
        self.model_path = model_path

    def setup(self, device) -> None:
        self.classifier = Classifier(self.model_path, str(Path(self.model_path).with_suffix(".json")), THREADS)
        self.max_pixels = Settings().max_pixels

    def decode_request(self, request) -> np.ndarray:
        return preprocess(request["file"].file.read(), self.classifier.prep, self.max_pixels)

    def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
        return np.stack(inputs)

    def predict(self, batch: np.ndarray) -> list[dict]:
        return self.classifier.predict(batch)

    def unbatch(self, output: list[dict]) -> list[dict]:
        return output

    def encode_response(self, output: dict) -> dict:
        return output


def main() -> None:
    parser = argparse.ArgumentParser(description="The peer: LitServe with dynamic batching, POST /predict, one image.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", required=True)
    args = parser.parse_args()
    server = ls.LitServer(PeerAPI(args.model), accelerator="cpu", devices=1, workers_per_device=PROCESSES, timeout=60)
    server.run(host="127.0.0.1", port=args.port, num_api_servers=1, generate_client_file=False, log_level="warning")


if __name__ == "__main__":
    main()
