"""The pending-chunk scheduler: no accepted image waits for nothing.

A job's chunks (the images one task classifies together) wait in the sorted set `jobs:pending`
from the transaction that creates the job until the script that writes their results, scored by
when a worker should queue them (again). A web process that dies before queueing them leaves them
due after `dispatch_grace_s`; once queued they are due after `requeue_after_s`, which only a chunk
whose task was lost or dropped on the way (an error, a broker losing a message) ever reaches.
Workers queue the chunks that fall due; results are written idempotently, so a chunk run twice is
harmless.

Batching across jobs: light chunks wait, oldest first, in their queue's ready list
(`jobs:ready:<queue>`). A worker task takes chunks from its head, of any jobs, up to a batch of
images, and records them under its task id (`jobs:batch:<task id>`) until their results are
written; it goes on taking until the list is empty, then lingers a moment (`BATCH_LINGER_S`) for
more: it is noted in the list's lingering set (`<list>:lingering`, scored by when it stops) and
waits on the list's bell (`<list>:bell`), which every listing rings. Celery messages are only
wake-ups: one is sent when a chunk is listed in an empty list that no task lingers on, and one by a
task that leaves chunks behind (another process can start on them). Whether to wake is decided in
the listing's own transaction, and a task stops lingering only in a take that finds the list
empty, so no chunk is listed unseen. A wake-up lost on the way is made up by the workers' sweeper:
a list that no task took from for `dispatch_grace_s` gets a new one. Why this design, and how each
guarantee survives: worker/classify.py.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Collection

from redis import Redis
from redis.client import Pipeline

PENDING = "jobs:pending"  # member "<job id> <i,j,...>", score: when a worker should queue it (again)
BATCH = "jobs:batch:"  # + a task id: the chunks that task took (JSON list of members)
# A bell holds at most this many rings: one wakes one lingering task, and more tasks than this
# never linger on one list.
BELL_RINGS = 64

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


# Task ARGV[5] (its batch: KEYS[2]) takes chunks from the head of ready list KEYS[1] while the
# batch holds at most ARGV[1] images (at least one chunk), records them for ARGV[2] seconds, counts
# them as queued in pending set KEYS[3] (due again after ARGV[3] s, as a queued chunk) and notes
# when (KEYS[4]). Finding none, the task lingers ARGV[4] s more in lingering set KEYS[5] (0: it
# stops), and the bell KEYS[6] is silenced: every ring so far was for chunks taken already.
# Replies {redelivered, taken (JSON), chunks left}: a task delivered again after its process died
# gets what it took then. TAKE_HEAD leaves `chunks` and `reply` for a script that goes on
# (common/jobs.py starts the chunks in the same step).
TAKE_HEAD = _NOW + """
local taken = redis.call('GET', KEYS[2])
if taken then return {1, taken, redis.call('LLEN', KEYS[1])} end
local function size(m) return select(2, string.gsub(m, ',', '')) + 1 end
local chunks, images = {}, 0
while true do
  local nxt = redis.call('LINDEX', KEYS[1], 0)
  if not nxt or (#chunks > 0 and images + size(nxt) > tonumber(ARGV[1])) then break end
  redis.call('LPOP', KEYS[1])
  redis.call('ZADD', KEYS[3], 'XX', now + ARGV[3], nxt)
  table.insert(chunks, nxt)
  images = images + size(nxt)
end
redis.call('SET', KEYS[4], now)
if #chunks == 0 then
  if tonumber(ARGV[4]) > 0 then redis.call('ZADD', KEYS[5], now + ARGV[4], ARGV[5])
  else redis.call('ZREM', KEYS[5], ARGV[5]) end
  redis.call('DEL', KEYS[6])
  return {0, '[]', 0}
end
redis.call('ZREM', KEYS[5], ARGV[5])
taken = cjson.encode(chunks)
redis.call('SET', KEYS[2], taken, 'EX', ARGV[2])
local reply = {0, taken, redis.call('LLEN', KEYS[1])}
"""
_TAKE = TAKE_HEAD + "return reply\n"

# Lists chunks ARGV[..] as ready in KEYS[1], once each, at the back, and rings its bell KEYS[3];
# returns 1 if a wake-up is due: the list was empty and no task lingers on it (KEYS[2]).
_MAKE_READY = _NOW + """
for _, m in ipairs(ARGV) do redis.call('LREM', KEYS[1], 0, m) end
local before = redis.call('RPUSH', KEYS[1], unpack(ARGV)) - #ARGV
redis.call('RPUSH', KEYS[3], 1)
redis.call('LTRIM', KEYS[3], -BELL_RINGS, -1)
return (before == 0 and redis.call('ZCOUNT', KEYS[2], now, '+inf') == 0) and 1 or 0
""".replace("BELL_RINGS", str(BELL_RINGS))

# True (and noted, so one sweeper acts) when ready list KEYS[1] holds chunks but no task took
# from it for ARGV[1] seconds (KEYS[2]: when one last did): its wake-up was lost.
_STALLED = _NOW + """
if redis.call('LLEN', KEYS[1]) == 0 then return 0 end
if now - tonumber(redis.call('GET', KEYS[2]) or 0) < tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[2], now)
return 1
"""


def ready_key(queue: str) -> str:
    return f"jobs:ready:{queue}"


def lingering_key(queue: str) -> str:
    return f"jobs:ready:{queue}:lingering"


def bell_key(queue: str) -> str:
    return f"jobs:ready:{queue}:bell"


def taken_key(queue: str) -> str:
    return f"jobs:ready:{queue}:taken_at"


def parse(due: bytes | str) -> tuple[str, list[int]]:
    """(job id, image indices) of a member."""
    job_id, indices = (due.decode() if isinstance(due, bytes) else due).split(" ")
    return job_id, [int(i) for i in indices.split(",")]


def taken(reply: list) -> tuple[bool, list[tuple[str, list[int]]], int]:
    """(redelivered, chunks, chunks left) from a reply that TAKE_HEAD began."""
    return bool(reply[0]), [parse(m) for m in json.loads(reply[1])], reply[2]


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
        self._offset, self._offset_read = 0.0, -math.inf
        self._claim_due = redis.register_script(_CLAIM_DUE)
        self._take = redis.register_script(_TAKE)
        self._make_ready = redis.register_script(_MAKE_READY)
        self._stalled = redis.register_script(_STALLED)

    def schedule(self, pipe: Pipeline, job_id: str, chunks: list[list[int]], listed: list[list[int]] = ()) -> None:
        """Adds the chunks to `pipe` (the transaction that stores their job), due after the grace;
        those `listed` to batch in the same transaction count as queued already (due after
        `requeue_after_s`): draining the list is the workers' job, and the sweeper wakes a list
        nobody takes from (see stalled)."""
        now = self.redis_now()
        for chunk in chunks:
            wait = self.requeue_after_s if chunk in listed else self.dispatch_grace_s
            pipe.zadd(PENDING, {member(job_id, chunk): now + wait})

    def redis_now(self) -> float:
        """Redis's clock (as the scripts read it, see _NOW) from this host's, by an offset read
        once a minute: a submission pays no round trip for it."""
        if time.monotonic() - self._offset_read > 60:
            seconds, micros = self.redis.time()
            self._offset, self._offset_read = seconds + micros / 1e6 - time.time(), time.monotonic()
        return time.time() + self._offset

    def dispatched(self, job_id: str, chunks: list[list[int]]) -> None:
        """These chunks are on the queue: due again only if not finished within `requeue_after_s`."""
        if chunks:
            self._reschedule(keys=[PENDING], args=[self.requeue_after_s, *(member(job_id, c) for c in chunks)])

    def claim_due(self) -> list[tuple[str, list[int]]]:
        """Pending chunks whose time has come (never queued, or queued and lost); each goes to one
        caller at a time, who queues it and calls `dispatched` (another gets it after the grace if
        that caller dies first)."""
        return [parse(due) for due in self._claim_due(keys=[PENDING], args=[self.dispatch_grace_s, self.job_prefix])]

    def ready(self, pipe: Pipeline, queue: str, job_id: str, chunks: list[list[int]]) -> int:
        """Adds to `pipe` (the transaction that stores their job) the listing of chunks to batch
        and a ring of the list's bell; returns how many answers that adds, for `wake_due`."""
        if not chunks:
            return 0
        pipe.rpush(ready_key(queue), *(member(job_id, c) for c in chunks))
        pipe.zcount(lingering_key(queue), self.redis_now(), "+inf")
        pipe.rpush(bell_key(queue), 1)
        pipe.ltrim(bell_key(queue), -BELL_RINGS, -1)
        return 4

    @staticmethod
    def wake_due(answers: list, listed: int) -> bool:
        """From the answers `ready` added (the last of a transaction's): whether a wake-up is due,
        since the list was empty and no task lingers on it."""
        length, lingering = answers[0], answers[1]
        return length == listed and lingering == 0

    def make_ready(self, queue: str, job_id: str, chunks: list[list[int]]) -> bool:
        """Lists chunks to batch that are not listed yet (queued again by the sweeper); returns
        whether a wake-up is due (as `wake_due`)."""
        if not chunks:
            return False
        keys = [ready_key(queue), lingering_key(queue), bell_key(queue)]
        return bool(self._make_ready(keys=keys, args=[member(job_id, c) for c in chunks]))

    def take(self, task_id: str, queue: str, max_images: int, hold_s: int,
             linger_s: float = 0) -> tuple[bool, list[tuple[str, list[int]]], int]:
        """What task `task_id` classifies next (see _TAKE): whether it took it in an earlier
        delivery, the chunks (none: the list is empty, and the task lingers `linger_s` more),
        and how many chunks still wait."""
        return taken(self._take(keys=self.take_keys(task_id, queue), args=self.take_args(task_id, max_images, hold_s, linger_s)))

    def take_keys(self, task_id: str, queue: str) -> list[str]:
        return [ready_key(queue), BATCH + task_id, PENDING, taken_key(queue), lingering_key(queue), bell_key(queue)]

    def take_args(self, task_id: str, max_images: int, hold_s: int, linger_s: float) -> list:
        return [max_images, hold_s, self.requeue_after_s, linger_s, task_id]

    def await_ring(self, queue: str, timeout_s: float) -> bool:
        """Waits up to `timeout_s` for a ring of `queue`'s bell (a chunk listed): whether one came."""
        return self.redis.blpop([bell_key(queue)], timeout=timeout_s) is not None

    def stalled(self, queue: str) -> bool:
        """Whether chunks wait in `queue`'s list with no task taking them (see _STALLED)."""
        return bool(self._stalled(keys=[ready_key(queue), taken_key(queue)], args=[self.dispatch_grace_s]))
