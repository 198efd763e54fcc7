"""The baseline: the original project's design, rebuilt as a yardstick. One Flask process loads
the model at start and answers POST /predict synchronously, one image per request, one request
at a time (werkzeug with threads off, as a single sync gunicorn worker would).

It shares the model, the preprocessing and the ONNX Runtime settings with our worker (through
bench.ceiling), so what the comparison measures is the architecture alone.
Run as `python -m bench.baseline --port P --model PATH`; bench.stack starts it.
"""
from __future__ import annotations

import argparse

from flask import Flask, request
from werkzeug.serving import make_server

from bench.ceiling import MAX_PIXELS, load_classifier
from common.preprocess import ImageError, preprocess
from worker.inference import Classifier


def answer(classifier: Classifier, data: bytes) -> tuple[dict, int]:
    """The old endpoint's answer for one upload: its best guess and top 3, confidences in percent."""
    try:
        batch = preprocess(data, classifier.prep, MAX_PIXELS)[None]
    except ImageError as exc:
        return {"error": {"code": exc.code, "message": exc.message}}, 422
    top3 = [{"sport": p["label"], "confidence": round(p["confidence"] * 100, 2)} for p in classifier.predict(batch)[0]["top3"]]
    return {"sport": top3[0]["sport"], "confidence": top3[0]["confidence"], "top_3": top3}, 200


def create_baseline_app(model_path: str) -> Flask:
    """The whole old service: a model loaded at start, one endpoint, one image per call."""
    classifier = load_classifier(model_path)
    app = Flask(__name__)

    @app.post("/predict")
    def predict():
        upload = request.files.get("file")
        if upload is None:
            return {"error": {"code": "no_file", "message": "send one part named 'file'"}}, 400
        return answer(classifier, upload.read())

    @app.get("/health")
    def health():
        return {"status": "ok"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="The baseline server: one process, POST /predict, one image.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", required=True)
    args = parser.parse_args()
    # Loopback only: a benchmark server has no business on the network.
    server = make_server("127.0.0.1", args.port, create_baseline_app(args.model), threaded=False)
    server.serve_forever()


if __name__ == "__main__":
    main()
