"""The model registry: every model in MODELS_DIR (an ONNX file beside its card), named
`name@version` from its card, so web and workers agree on what a model id means.

The web app lists the registry (GET /api/v1/models) and checks routing against it; a worker
looks up the ids it is told to serve (WORKER_MODELS). Cards are small JSON files, so the web
process reads them without loading a model. Workers also publish their models' cards in Redis
(`models:cards`), so a model added on a worker host can be routed to without the file on the
web hosts and without restarting them.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from redis import Redis

from common.model_card import load_card
from common.settings import Settings

log = logging.getLogger(__name__)
CARDS = "models:cards"  # hash: model id -> its card (JSON), as the workers that serve it read it


def model_id(card: dict) -> str:
    return f"{card['name']}@{card['version']}"


@dataclass(frozen=True)
class ModelEntry:
    """One model of the registry: its id, its card, and where its ONNX file and card live (None
    for a model known only from a worker's publication)."""
    id: str
    card: dict
    model_path: Path | None = None
    card_path: Path | None = None

    @property
    def identity(self) -> dict:
        return {"name": self.card["name"], "version": self.card["version"]}


def entry(model_path: str | Path) -> ModelEntry:
    """The model at `model_path`, its card beside it (same name, .json)."""
    card_path = Path(model_path).with_suffix(".json")
    card = load_card(card_path)
    return ModelEntry(model_id(card), card, Path(model_path), card_path)


def scan(directory: str | Path) -> dict[str, ModelEntry]:
    """Every model in `directory` whose card reads and whose ONNX file is there, by id. Two files
    claiming one id are refused: which of them a worker loaded would be a guess."""
    found: dict[str, ModelEntry] = {}
    for model_path in sorted(Path(directory).glob("*.onnx")):
        try:
            model = entry(model_path)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("%s is not in the registry: %s", model_path, exc)
            continue
        if model.id in found:
            raise ValueError(f"{model_path} and {found[model.id].model_path} both call themselves {model.id}")
        found[model.id] = model
    return found


def registry(settings: Settings) -> dict[str, ModelEntry]:
    """The models of MODELS_DIR (default: the folder of MODEL_PATH), and the one at MODEL_PATH."""
    default = entry(settings.model_path)
    models = scan(settings.models_dir or default.model_path.parent)
    return models | {default.id: models.get(default.id, default)}


def served_models(settings: Settings) -> list[ModelEntry]:
    """The models a worker serves: WORKER_MODELS' ids looked up in the registry, else MODEL_PATH's."""
    wanted = [name.strip() for name in settings.worker_models.split(",") if name.strip()]
    if not wanted:
        return [entry(settings.model_path)]
    known = registry(settings)
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise ValueError(f"WORKER_MODELS names {unknown}, not in the registry {sorted(known)}")
    return [known[name] for name in wanted]


def publish(redis: Redis, models: list[ModelEntry]) -> None:
    """Makes a worker's models known to every web process, even where their files are not."""
    redis.hset(CARDS, mapping={model.id: json.dumps(model.card) for model in models})


def published(redis: Redis, model: str | None = None) -> dict[str, ModelEntry]:
    """The models workers have published (only `model`, if given), by id."""
    if model is not None:
        card = redis.hget(CARDS, model)
        cards = {model.encode(): card} if card else {}
    else:
        cards = redis.hgetall(CARDS)
    return {key.decode(): ModelEntry(key.decode(), json.loads(card)) for key, card in cards.items()}
