"""Job records in Redis: the only state the web app and the workers share.

One job is a Redis hash `job:<id>`: field `meta` (JSON: created_at, total, filenames), one field per
image index (JSON: status, top3, error), `final` (how many images have a final status), `model` and
`finished_at`. Each accepted image's bytes wait under `job:<id>:image:<i>` until a worker is done
with it. Everything expires `ttl` seconds after it was last written. When the last image becomes
final, a message on `job:<id>:done` wakes the clients that long-poll.

A job's chunks (the images one task classifies together) wait in the sorted set `jobs:pending`
from the transaction that creates the job until the transaction that writes their results, scored
by when a worker should queue them (again). A web process that dies before queueing them leaves
them due after `dispatch_grace_s`; once queued they are due after `requeue_after_s`, which only a
chunk whose task was lost or dropped on the way (an error, a broker losing a message) ever
reaches. Workers queue the chunks that fall due, so no accepted image waits for nothing; results are
written idempotently, so a chunk run twice is harmless.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterable
from datetime import datetime, timezone

from redis import Redis

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"

# Marks images running unless they are already further along (a redelivered task must not
# move a finished image back), and counts how often this chunk (named by its first image) has been
# started. Returns that count, or 0 when the job is gone (expired).
_MARK_RUNNING = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts:' .. ARGV[1], 1)
for i = 1, #ARGV do
  local current = redis.call('HGET', KEYS[1], ARGV[i])
  if current and cjson.decode(current)['status'] == 'queued' then
    redis.call('HSET', KEYS[1], ARGV[i], '{"status":"running"}')
  end
end
return attempts
"""

# Writes final results, counting only images not final before, so a task run twice (after a
# worker died between writing and acknowledging) is harmless; drops the images' bytes (KEYS[4..])
# and ends their chunks (ARGV[4], a JSON list of members of the pending set KEYS[3]), all in one
# script so that a chunk never ends without its results. The last image closes the job.
_FINISH = """
for k = 4, #KEYS do redis.call('DEL', KEYS[k]) end
for _, member in ipairs(cjson.decode(ARGV[4])) do redis.call('ZREM', KEYS[3], member) end
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local newly = 0
for i = 5, #ARGV, 2 do
  local status = cjson.decode(redis.call('HGET', KEYS[1], ARGV[i]))['status']
  if status ~= 'done' and status ~= 'failed' then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    newly = newly + 1
  end
end
if newly == 0 then return -2 end
redis.call('HSET', KEYS[1], 'model', ARGV[2])
local final = redis.call('HINCRBY', KEYS[1], 'final', newly)
if final == tonumber(redis.call('HGET', KEYS[1], 'total')) then
  redis.call('HSET', KEYS[1], 'finished_at', ARGV[1])
  redis.call('PUBLISH', KEYS[2], 'done')
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return final
"""


PENDING = "jobs:pending"  # member "<job id> <i,j,...>", score: when a worker should queue it (again)

# Every time here is Redis's own (TIME), so hosts whose clocks disagree still agree on what is due.
_NOW = "local t = redis.call('TIME'); local now = t[1] + t[2] / 1e6"

# Re-schedules the chunks still pending (ARGV[2..]) ARGV[1] seconds from now.
_RESCHEDULE = _NOW + """
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', now + ARGV[1], ARGV[i]) end
"""

# Takes the chunks whose time has come and pushes their time on by the grace (ARGV[1]) rather than
# removing them: a worker that dies after claiming leaves them for another one. Chunks of jobs
# that expired (no key ARGV[2] .. job id) are dropped.
_CLAIM_DUE = _NOW + """
local due, claimed = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 100), {}
for _, member in ipairs(due) do
  if redis.call('EXISTS', ARGV[2] .. string.match(member, '^%S+')) == 1 then
    redis.call('ZADD', KEYS[1], now + ARGV[1], member)
    table.insert(claimed, member)
  else
    redis.call('ZREM', KEYS[1], member)
  end
end
return claimed
"""


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def failure(code: str, message: str) -> dict:
    return {"status": FAILED, "top3": [], "error": {"code": code, "message": message}}


def success(top3: list[dict]) -> dict:
    return {"status": DONE, "top3": top3, "error": None}


class JobStore:
    def __init__(self, redis: Redis, ttl_s: int, dispatch_grace_s: float = 30, requeue_after_s: float = 600):
        self.redis = redis
        self.ttl_s = ttl_s
        self.dispatch_grace_s = dispatch_grace_s
        self.requeue_after_s = requeue_after_s
        self._mark_running = redis.register_script(_MARK_RUNNING)
        self._finish = redis.register_script(_FINISH)
        self._reschedule = redis.register_script(_RESCHEDULE)
        self._claim_due = redis.register_script(_CLAIM_DUE)

    @staticmethod
    def key(job_id: str) -> str:
        return f"job:{job_id}"

    def image_key(self, job_id: str, index: int) -> str:
        return f"{self.key(job_id)}:image:{index}"

    def channel(self, job_id: str) -> str:
        return f"{self.key(job_id)}:done"

    def create(self, job_id: str, filenames: list[str], images: dict[int, bytes], failures: dict[int, dict],
               chunks: Iterable[list[int]] = ()) -> None:
        """Stores a new job: `images` are to be classified, `failures` were refused on arrival;
        `chunks` are recorded as pending until their results are written (see the module's doc)."""
        total = len(filenames)
        fields = {"meta": json.dumps({"created_at": now_iso(), "total": total, "filenames": filenames}),
                  "total": total, "final": len(failures)}
        for index in range(total):
            record = failures.get(index, {"status": QUEUED})
            fields[str(index)] = json.dumps(record)
        if len(failures) == total:
            fields["finished_at"] = now_iso()
        seconds, micros = self.redis.time()  # Redis's clock, as the scripts use (see _NOW)
        due = seconds + micros / 1e6 + self.dispatch_grace_s
        with self.redis.pipeline() as pipe:  # MULTI/EXEC: a job appears whole or not at all
            for index, data in images.items():
                pipe.set(self.image_key(job_id, index), data, ex=self.ttl_s)
            pipe.hset(self.key(job_id), mapping=fields)
            pipe.expire(self.key(job_id), self.ttl_s)
            for chunk in chunks:
                pipe.zadd(PENDING, {_chunk_member(job_id, chunk): due})
            pipe.execute()

    def dispatched(self, job_id: str, chunks: list[list[int]]) -> None:
        """These chunks are on the queue: due again only if not finished within `requeue_after_s`."""
        if chunks:
            members = [_chunk_member(job_id, chunk) for chunk in chunks]
            self._reschedule(keys=[PENDING], args=[self.requeue_after_s, *members])

    def claim_due(self) -> list[tuple[str, list[int]]]:
        """Pending chunks whose time has come (never queued, or queued and lost); each goes to one
        caller at a time, who queues it and calls `dispatched` (another gets it after the grace if
        that caller dies first)."""
        due = self._claim_due(keys=[PENDING], args=[self.dispatch_grace_s, self.key("")])
        claimed = []
        for member in due:
            job_id, indices = member.decode().split(" ")
            claimed.append((job_id, [int(i) for i in indices.split(",")]))
        return claimed

    def mark_running(self, job_id: str, indices: list[int]) -> int:
        """How many times this chunk has now been started (1 the first time); 0 if the job expired."""
        return self._mark_running(keys=[self.key(job_id)], args=indices)

    def images(self, job_id: str, indices: list[int]) -> list[bytes | None]:
        """The waiting images' bytes, in one round trip (None where gone)."""
        return self.redis.mget([self.image_key(job_id, i) for i in indices])

    def finish(self, job_id: str, results: dict[int, dict], model: dict, chunks: list[list[int]] | None = None) -> None:
        """Writes final results (only for images not final yet) and ends the chunks that held them:
        by default one chunk of exactly these images."""
        chunks = [sorted(results)] if chunks is None else chunks
        args = [now_iso(), json.dumps(model), self.ttl_s, json.dumps([_chunk_member(job_id, c) for c in chunks])]
        for index, record in results.items():
            args += [index, json.dumps(record)]
        keys = [self.key(job_id), self.channel(job_id), PENDING, *(self.image_key(job_id, i) for i in results)]
        self._finish(keys=keys, args=args)

    def get(self, job_id: str) -> dict | None:
        """The job as clients see it (REST contract v1), or None if unknown or expired."""
        fields = self.redis.hgetall(self.key(job_id))
        if b"meta" not in fields:
            return None
        meta = json.loads(fields[b"meta"])
        records = [json.loads(fields[str(i).encode()]) for i in range(meta["total"])]
        counts = {s: sum(r["status"] == s for r in records) for s in (QUEUED, RUNNING, DONE, FAILED)}
        if counts[DONE] + counts[FAILED] == meta["total"]:
            status = DONE
        else:  # images refused on arrival are final but were never worked on: they do not count as started
            status = RUNNING if counts[RUNNING] or counts[DONE] else QUEUED
        return {
            "job_id": job_id,
            "status": status,
            "progress": {"done": counts[DONE], "failed": counts[FAILED], "total": meta["total"]},
            "created_at": meta["created_at"],
            "finished_at": fields[b"finished_at"].decode() if b"finished_at" in fields else None,
            "model": json.loads(fields[b"model"]) if b"model" in fields else None,
            "results": [
                {"index": i, "filename": meta["filenames"][i], "status": r["status"],
                 "top3": r.get("top3", []), "error": r.get("error")}
                for i, r in enumerate(records)
            ],
        }

    def wait(self, job_id: str, timeout_s: float) -> dict | None:
        """Long poll: the job once it is done, or as it stands when `timeout_s` runs out.
        Subscribing before the first read means a finish in between cannot be missed."""
        deadline = time.monotonic() + timeout_s
        with self.redis.pubsub(ignore_subscribe_messages=True) as pubsub:
            pubsub.subscribe(self.channel(job_id))
            job = self.get(job_id)
            while job is not None and job["status"] != DONE:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                if pubsub.get_message(timeout=remaining) is not None:
                    job = self.get(job_id)
            return job


def _chunk_member(job_id: str, chunk: list[int]) -> str:
    return f"{job_id} {','.join(map(str, chunk))}"
