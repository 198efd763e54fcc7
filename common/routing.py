"""Which model classifies a job: the active model, a canary taking a share of jobs, and a shadow
that also classifies a share of jobs only to measure how often it agrees.

The routing lives in Redis (hash `models:routing`), so an operator changes it for every web
process at once, with no restart (PATCH /api/v1/models/routing); until the hash is written, the
settings MODEL_ACTIVE, MODEL_CANARY and MODEL_SHADOW are the routing. Each job is routed once, on
submit, and keeps its model (the job record names it), so its chunks never change model midway.

The canary's jobs are spread evenly rather than drawn at random: while there is a canary, jobs are
numbered by a counter in Redis that every web process shares, and job n goes to the canary when
n x share / 100 passes a whole number. So 10% is exactly 1 job in 10, in any run of 10 jobs,
however many web processes take them. The shadow's sample is drawn at random (it must not line up
with the canary's jobs).
"""
from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass, replace

from redis import Redis

from common.settings import Settings

KEY = "models:routing"
COUNTER = "models:jobs_routed"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Split:
    """A model and the percentage of jobs it takes (canary) or also classifies (shadow)."""
    model: str
    share: float

    @classmethod
    def parse(cls, text: str, variable: str) -> "Split | None":
        """`name@version:percent`, or None for empty text."""
        if not text:
            return None
        model, _, share = text.rpartition(":")
        try:
            split = cls(model, float(share))
        except ValueError:
            split = None
        if split is None or not model or not 0 <= split.share <= 100:
            raise ValueError(f"{variable}={text!r} is not valid: expected name@version:percent (0-100)")
        return split

    def __str__(self) -> str:
        return f"{self.model}:{self.share:g}"


@dataclass(frozen=True)
class Routing:
    active: str
    canary: Split | None = None
    shadow: Split | None = None
    source: str = "settings"  # or "redis": where this routing was read from

    def shares(self) -> dict[str, float]:
        """Each model's share of jobs, in percent (shadows take none: they answer no client)."""
        if self.canary is None or self.canary.model == self.active:
            return {self.active: 100.0}
        return {self.active: 100.0 - self.canary.share, self.canary.model: self.canary.share}

    def choose(self, number: int) -> str:
        """The model for job `number` (1, 2, ...): the canary for its share of them, evenly spread."""
        canary = self.canary
        if canary and math.floor(number * canary.share / 100) > math.floor((number - 1) * canary.share / 100):
            return canary.model
        return self.active

    def shadow_for(self, model: str, rng: random.Random) -> str | None:
        """The shadow model that also classifies this job, for its share of jobs; never the job's own."""
        shadow = self.shadow
        if shadow is None or shadow.model == model or rng.random() * 100 >= shadow.share:
            return None
        return shadow.model

    def to_redis(self) -> dict[str, str]:
        return {"active": self.active, "canary": str(self.canary or ""), "shadow": str(self.shadow or "")}


def from_settings(settings: Settings, default_model: str) -> Routing:
    """The routing the settings describe; `default_model` (MODEL_PATH's) when MODEL_ACTIVE is empty."""
    return Routing(settings.model_active or default_model, Split.parse(settings.model_canary, "MODEL_CANARY"),
                   Split.parse(settings.model_shadow, "MODEL_SHADOW"))


def load(redis: Redis, initial: Routing) -> Routing:
    """The routing in force: Redis's once an operator wrote it, else `initial` (the settings')."""
    return parse(redis.hgetall(KEY), initial)


def number_job(redis: Redis) -> int:
    """The next job's number (1, 2, ...), for `Routing.choose`: needed only while there is a canary."""
    return redis.incr(COUNTER)


def parse(hash_fields: dict[bytes, bytes], initial: Routing) -> Routing:
    """The stored routing; `initial` if there is none, or if a hand edit of the hash broke it
    (jobs keep flowing by the settings rather than every submission failing)."""
    stored = {k.decode(): v.decode() for k, v in hash_fields.items()}
    if not stored.get("active"):
        return initial
    try:
        return Routing(stored["active"], Split.parse(stored.get("canary", ""), "canary"),
                       Split.parse(stored.get("shadow", ""), "shadow"), source="redis")
    except ValueError as exc:
        log.error("%s in Redis is not a routing (%s): routing by the settings", KEY, exc)
        return initial


def save(redis: Redis, routing: Routing) -> Routing:
    redis.hset(KEY, mapping=routing.to_redis())
    return replace(routing, source="redis")
