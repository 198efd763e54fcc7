"""The pending-chunk scheduler: no accepted image waits for nothing.

A job's chunks (the images one task classifies together) wait in the sorted set `jobs:pending`
from the transaction that creates the job until the script that writes their results, scored by
when a worker should queue them (again). A web process that dies before queueing them leaves them
due after `dispatch_grace_s`; once queued they are due after `requeue_after_s`, which only a chunk
whose task was lost or dropped on the way (an error, a broker losing a message) ever reaches.
Workers queue the chunks that fall due; results are written idempotently, so a chunk run twice is
harmless.
"""
from __future__ import annotations

from collections.abc import Collection

from redis import Redis
from redis.client import Pipeline

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
        claimed = []
        for due in self._claim_due(keys=[PENDING], args=[self.dispatch_grace_s, self.job_prefix]):
            job_id, indices = due.decode().split(" ")
            claimed.append((job_id, [int(i) for i in indices.split(",")]))
        return claimed
