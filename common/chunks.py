"""The pending-chunk scheduler: no accepted image waits for nothing.

A job's chunks (the images one task classifies together) wait in the sorted set `jobs:pending`
from the transaction that creates the job until the script that writes their results, scored by
when a worker should queue them (again). A web process that dies before queueing them leaves them
due after `dispatch_grace_s`; once queued they are due after `requeue_after_s`, which only a chunk
whose task was lost or dropped on the way (an error, a broker losing a message) ever reaches.
Workers queue the chunks that fall due; results are written idempotently, so a chunk run twice is
harmless.

Batching across jobs: each light chunk is also listed, oldest first, in its queue's ready list
(`jobs:ready:<queue>`), and still gets a Celery task of its own. The task that runs first takes
its own chunk out of the list with the chunks waiting behind it, up to a batch of images, and
records what it took under its task id (`jobs:batch:<task id>`) until their results are written;
the tasks of the chunks it took find theirs gone and end at once. Why this and not a library, and
how each guarantee survives: worker/classify.py.
"""
from __future__ import annotations

import json
from collections.abc import Collection

from redis import Redis
from redis.client import Pipeline

PENDING = "jobs:pending"  # member "<job id> <i,j,...>", score: when a worker should queue it (again)
BATCH = "jobs:batch:"  # + a task id: the chunks that task took (JSON list of members)

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


# Task KEYS[2] takes its chunk ARGV[1] from ready list KEYS[1], with the chunks queued before it or
# after it, oldest first, while the batch holds at most ARGV[2] images; records them for ARGV[3]
# seconds. Returns {0, taken} ({0} if the chunk was taken by another task, or is done), or, for a
# task delivered again after its process died, {1, what it took then}.
_TAKE = """
local taken = redis.call('GET', KEYS[2])
if taken then return {1, taken} end
if redis.call('LREM', KEYS[1], 0, ARGV[1]) == 0 then return {0} end
local function size(m) return select(2, string.gsub(m, ',', '')) + 1 end
local chunks, images = {ARGV[1]}, size(ARGV[1])
while true do
  local nxt = redis.call('LINDEX', KEYS[1], 0)
  if not nxt or images + size(nxt) > tonumber(ARGV[2]) then break end
  redis.call('LPOP', KEYS[1])
  table.insert(chunks, nxt)
  images = images + size(nxt)
end
taken = cjson.encode(chunks)
redis.call('SET', KEYS[2], taken, 'EX', ARGV[3])
return {0, taken}
"""

# Lists chunks ARGV[..] as ready in KEYS[1], once each, at the back.
_MAKE_READY = """
for _, m in ipairs(ARGV) do redis.call('LREM', KEYS[1], 0, m); redis.call('RPUSH', KEYS[1], m) end
"""


def ready_key(queue: str) -> str:
    return f"jobs:ready:{queue}"


def parse(due: bytes | str) -> tuple[str, list[int]]:
    """(job id, image indices) of a member."""
    job_id, indices = (due.decode() if isinstance(due, bytes) else due).split(" ")
    return job_id, [int(i) for i in indices.split(",")]


def member(job_id: str, chunk: list[int]) -> str:
    return f"{job_id} {','.join(map(str, chunk))}"


def chunked(indices: list[int], size: int, heavy: Collection[int] = ()) -> list[list[int]]:
    """The images of a job in chunks of at most `size`, each run as one batched inference. Each
    heavy image (costly to decode) gets a chunk of its own, after the light ones: it cannot make
    them wait, nor take them down with it if its task runs out of time or memory."""
    light = [i for i in indices if i not in heavy]
    return [light[i:i + size] for i in range(0, len(light), size)] + [[i] for i in indices if i in heavy]


class ChunkScheduler:
    def __init__(self, redis: Redis, job_prefix: str, dispatch_grace_s: float = 30, requeue_after_s: float = 600):
        self.redis, self.job_prefix = redis, job_prefix
        self.dispatch_grace_s, self.requeue_after_s = dispatch_grace_s, requeue_after_s
        self._reschedule = redis.register_script(_RESCHEDULE)
        self._claim_due = redis.register_script(_CLAIM_DUE)
        self._take = redis.register_script(_TAKE)
        self._make_ready = redis.register_script(_MAKE_READY)

    def schedule(self, pipe: Pipeline, job_id: str, chunks: list[list[int]]) -> None:
        """Adds the chunks to `pipe` (the transaction that stores their job), due after the grace."""
        seconds, micros = self.redis.time()  # Redis's clock, as the scripts use (see _NOW)
        due = seconds + micros / 1e6 + self.dispatch_grace_s
        for chunk in chunks:
            pipe.zadd(PENDING, {member(job_id, chunk): due})

    def dispatched(self, job_id: str, chunks: list[list[int]]) -> None:
        """These chunks are on the queue: due again only if not finished within `requeue_after_s`."""
        if chunks:
            self._reschedule(keys=[PENDING], args=[self.requeue_after_s, *(member(job_id, c) for c in chunks)])

    def claim_due(self) -> list[tuple[str, list[int]]]:
        """Pending chunks whose time has come (never queued, or queued and lost); each goes to one
        caller at a time, who queues it and calls `dispatched` (another gets it after the grace if
        that caller dies first)."""
        return [parse(due) for due in self._claim_due(keys=[PENDING], args=[self.dispatch_grace_s, self.job_prefix])]

    def ready(self, pipe: Pipeline, queue: str, job_id: str, chunks: list[list[int]]) -> None:
        """Adds to `pipe` (the transaction that stores their job) the listing of chunks to batch."""
        if chunks:
            pipe.rpush(ready_key(queue), *(member(job_id, c) for c in chunks))

    def make_ready(self, queue: str, job_id: str, chunks: list[list[int]]) -> None:
        """Lists chunks to batch that are not listed yet (queued again by the sweeper)."""
        if chunks:
            self._make_ready(keys=[ready_key(queue)], args=[member(job_id, c) for c in chunks])

    def take(self, task_id: str, queue: str, job_id: str, chunk: list[int], max_images: int,
             hold_s: int) -> tuple[bool, list[tuple[str, list[int]]]]:
        """What task `task_id` classifies (see _TAKE): whether it took it in an earlier delivery,
        and the chunks, its own first; none if another task took its chunk."""
        taken = self._take(keys=[ready_key(queue), BATCH + task_id], args=[member(job_id, chunk), max_images, hold_s])
        return bool(taken[0]), [parse(m) for m in json.loads(taken[1])] if len(taken) > 1 else []
