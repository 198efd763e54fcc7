"""The model card: the one source of truth for class names, input size, normalization and version.

Written by `ml/export.py` beside each ONNX file; read by the worker (to prepare images and name
predictions) and by the web app (to list classes), so neither keeps its own copy of these facts.
"""
from __future__ import annotations

import json
from pathlib import Path

REQUIRED = {"name", "version", "classes", "display_names", "preprocessing", "sha256"}


def load_card(path: str | Path) -> dict:
    card = json.loads(Path(path).read_text())
    missing = REQUIRED - card.keys()
    if missing:
        raise ValueError(f"model card {path} lacks {sorted(missing)}")
    if len(card["display_names"]) != len(card["classes"]):
        raise ValueError(f"model card {path}: display_names and classes differ in length")
    return card


def model_identity(card: dict) -> dict:
    return {"name": card["name"], "version": card["version"]}
