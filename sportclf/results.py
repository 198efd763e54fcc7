"""What the client hands back: one Result per image, with the top 3 by label and display name."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Prediction:
    label: str  # the model's class label: a stable key
    display_name: str  # the label spelled for people
    confidence: float


@dataclass(frozen=True)
class Failure:
    code: str
    message: str


@dataclass(frozen=True)
class Result:
    path: Path
    status: str  # "done", or why not: "failed", or "cancelled" (by the service)
    top3: list[Prediction] = field(default_factory=list)
    error: Failure | None = None
    confident: bool | None = None  # done: whether the first answer is sure enough to state without a "maybe"


def failed(path: Path, code: str, message: str) -> Result:
    return Result(path, "failed", [], Failure(code, message))


def from_job(paths: list[Path], job: dict) -> list[Result]:
    """The results of a finished job document, matched to the files sent by their index."""
    return [Result(paths[r["index"]], r["status"], [prediction(p) for p in r["top3"]],
                   Failure(r["error"]["code"], r["error"]["message"]) if r["error"] else None, r.get("confident"))
            for r in job["results"]]


def prediction(p: dict) -> Prediction:
    return Prediction(p["label"], p.get("display_name", p["label"]), p["confidence"])
