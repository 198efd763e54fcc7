"""Job records in Redis: the only state the web app and the workers share.

One job is a Redis hash `job:<id>`: field `meta` (JSON: created_at, total, filenames), one field per
image index (JSON: status, top3, error), `final` (how many images have a final status), `model` (the
model routed to, then the one that classified it) and `finished_at`. Each accepted image's bytes wait under
`job:<id>:image:<i>` until a worker is done with it. Everything expires `ttl` seconds after it was
last written. When the last image becomes final, a message on `job:<id>:done` (carrying the closed
record, unless it is large) wakes the clients that long-poll. The chunks of a job that wait for a
worker are the scheduler's (common/chunks.py).
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone

from redis import Redis
from redis.client import Pipeline
from redis.commands.core import Script
from redis.exceptions import NoScriptError

from common.chunks import BATCH, PENDING, TAKE_HEAD, ChunkScheduler, member, taken
from common.notify import RECHECK_S, DoneListener
from common.settings import Settings
from common.webhooks import ON_CLOSE, PENDING_CALLBACKS, new_callback

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
IMAGE_STATUSES = (QUEUED, RUNNING, DONE, FAILED, CANCELLED)
JOB_STATUSES = (QUEUED, RUNNING, DONE)
# Waits, at most the seconds it is given, for one job's "done" message; returns it, or None if none
# came, or on a wake that carries none (JobStore.watching).
Watch = Callable[[float], bytes | None]
# A finished job's record up to this size rides on its "done" message (about 20 images' worth).
PUBLISHED_BYTES = 8192

# Marks images running unless they are already further along (a redelivered task must not move a
# finished image back), and counts how often this chunk (named by its first image) has been
# started. Returns that count followed by the images still to classify (none once a job is
# cancelled), or nil when the job is gone (expired).
_MARK = f"""
local function mark(key, indices)
  if redis.call('EXISTS', key) == 0 then return false end
  local started = {{redis.call('HINCRBY', key, 'attempts:' .. indices[1], 1)}}
  for _, i in ipairs(indices) do
    local current = redis.call('HGET', key, i)
    local status = current and cjson.decode(current)['status']
    if status == '{QUEUED}' then redis.call('HSET', key, i, '{{"status":"{RUNNING}"}}') end
    if status == '{QUEUED}' or status == '{RUNNING}' then table.insert(started, tonumber(i)) end
  end
  return started
end
"""
_MARK_RUNNING = _MARK + "return mark(KEYS[1], ARGV)\n"

# A task's next batch in one step: takes chunks as common/chunks.py's TAKE_HEAD does (ARGV[1..5]),
# then starts each as _MARK_RUNNING does and reads the bytes of its images to classify; the job
# keys are ARGV[6] .. job id. Appends to the reply, per chunk, {started, {bytes or false, ...}}, or
# false for an expired job. A redelivered task gets only what it took (it starts them one by one).
_START_BATCH = TAKE_HEAD + _MARK + """
for _, m in ipairs(chunks) do
  local key, indices = ARGV[6] .. string.match(m, '^%S+'), {}
  for i in string.gmatch(string.match(m, '%S+$'), '[^,]+') do table.insert(indices, i) end
  local started, images = mark(key, indices), {}
  if started then
    for k = 2, #started do table.insert(images, redis.call('GET', key .. ':image:' .. started[k])) end
  end
  table.insert(reply, started and {started, images} or false)
end
return reply
"""

# After `newly` more images of job KEYS[1] became final: the last one closes the job (finished_at
# ARGV[1]) and wakes the long polls on channel KEYS[2] with the record, closed (HGETALL, as JSON:
# they answer from it without reading it again), or with just "done" if the record is over
# PUBLISHED_BYTES (every web process hears every job's message); the record lives ARGV[3] s more.
# Returns the count, the job's total, when it was created (for the metrics: see Written) and 1 if
# the job closed with a callback due (see common/webhooks.py), else 0.
_COUNT_FINAL = f"""
local final, hook = redis.call('HINCRBY', KEYS[1], 'final', newly), 0
local total = tonumber(redis.call('HGET', KEYS[1], 'total'))
if final == total then
  redis.call('HSET', KEYS[1], 'finished_at', ARGV[1])
  local record = cjson.encode(redis.call('HGETALL', KEYS[1]))
  redis.call('PUBLISH', KEYS[2], #record <= {PUBLISHED_BYTES} and record or 'done')
""" + ON_CLOSE + """
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return {final, total, cjson.decode(redis.call('HGET', KEYS[1], 'meta'))['created_at'], hook}
"""

_IS_FINAL = f"(status == '{DONE}' or status == '{FAILED}' or status == '{CANCELLED}')"

# Writes final results, counting only images not final before, so a task run twice (after a
# worker died between writing and acknowledging) is harmless; records the model (ARGV[2], if any);
# drops the images' bytes (KEYS[4..]) and ends their chunks (ARGV[4], a JSON list of members of
# the pending set KEYS[3]), all in one script so that a chunk never ends without its results.
_FINISH = f"""
for k = 4, #KEYS do redis.call('DEL', KEYS[k]) end
for _, member in ipairs(cjson.decode(ARGV[4])) do redis.call('ZREM', KEYS[3], member) end
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local newly = 0
for i = 5, #ARGV, 2 do
  local status = cjson.decode(redis.call('HGET', KEYS[1], ARGV[i]))['status']
  if not {_IS_FINAL} then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    newly = newly + 1
  end
end
if newly == 0 then return -2 end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'model', ARGV[2]) end
""" + _COUNT_FINAL

# Cancels the images still queued (KEYS[3..], one per image, are their bytes): images running
# finish as usual, and a worker that takes a cancelled chunk skips it (see _MARK_RUNNING).
_CANCEL = f"""
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local newly = 0
for i = 3, #KEYS do
  local index = tostring(i - 3)
  local status = cjson.decode(redis.call('HGET', KEYS[1], index))['status']
  if status == '{QUEUED}' then
    redis.call('HSET', KEYS[1], index, '{{"status":"{CANCELLED}"}}')
    redis.call('DEL', KEYS[i])
    newly = newly + 1
  end
end
if newly == 0 then return -2 end
""" + _COUNT_FINAL


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def failure(code: str, message: str) -> dict:
    return {"status": FAILED, "top3": [], "error": {"code": code, "message": message}}


def success(prediction: dict) -> dict:
    """`prediction`: the classifier's top3 and confident flag for one image."""
    return {"status": DONE, **prediction, "error": None}


@dataclass(frozen=True)
class Job:
    """A job as stored: `images` holds each image's record ({"status", "top3"?, "error"?})."""
    job_id: str
    created_at: str
    finished_at: str | None
    model: dict | None
    filenames: list[str]
    images: list[dict]
    callback: dict | None = None  # {"url", "status", "attempts", "last_error"} if it has a callback_url

    @property
    def finished(self) -> bool:
        return self.finished_at is not None


@dataclass(frozen=True)
class Written:
    """What writing a chunk's results changed, for the metrics: when its job was created (time to
    result) and whether this write finished the job."""
    created_at: str
    job_finished: bool


@dataclass(frozen=True)
class Started:
    """A chunk as a worker starts it: which attempt this is, and the images still to classify."""
    attempt: int
    indices: list[int]


@dataclass(frozen=True)
class Batch:
    """What a task took (common/chunks.py): whether in an earlier delivery, the chunks, how many
    chunks still wait, and, unless redelivered, each chunk as started with its images' bytes (None
    for an expired job)."""
    redelivered: bool
    chunks: list[tuple[str, list[int]]]
    left: int
    starts: list[tuple[Started, list[bytes | None]] | None]


class JobStore:
    def __init__(self, redis: Redis, ttl_s: int, dispatch_grace_s: float = 30, requeue_after_s: float = 600,
                 listener: DoneListener | None = None):
        self.redis, self.listener = redis, listener
        self.ttl_s = ttl_s
        self.chunks = ChunkScheduler(redis, self.key(""), dispatch_grace_s, requeue_after_s)
        self._mark_running = redis.register_script(_MARK_RUNNING)
        self._start_batch = redis.register_script(_START_BATCH)
        self._finish = redis.register_script(_FINISH)
        self._cancel = redis.register_script(_CANCEL)
        # Called with a job's id when a write here closes a job with a callback: the process that
        # owns this store queues the delivery (common/webhooks.py); unset, a sweeper does later.
        self.on_callback_due: Callable[[str], None] | None = None

    @classmethod
    def for_settings(cls, redis: Redis, settings: Settings, shared_subscription: bool = False) -> "JobStore":
        """`shared_subscription`: long polls share one subscription per process (the web's)."""
        listener = DoneListener(redis, cls.channel_pattern()) if shared_subscription else None
        return cls(redis, settings.result_ttl_s, settings.dispatch_grace_s, settings.requeue_after_s, listener)

    @staticmethod
    def key(job_id: str) -> str:
        return f"job:{job_id}"

    def image_key(self, job_id: str, index: int) -> str:
        return f"{self.key(job_id)}:image:{index}"

    def channel(self, job_id: str) -> str:
        return f"{self.key(job_id)}:done"

    @classmethod
    def channel_pattern(cls) -> str:
        """Every job's channel, for one subscription to them all."""
        return f"{cls.key('*')}:done"

    def create(self, job_id: str, filenames: list[str], images: dict[int, bytes], failures: dict[int, dict],
               chunks: list[list[int]] = (), model: dict | None = None, callback_url: str | None = None,
               heavy: Collection[int] = (), queue: str | None = None, pipe: Pipeline | None = None) -> bool | None:
        """Stores a new job: `images` are to be classified, `failures` were refused on arrival;
        `chunks` are pending until their results are written (see common/chunks.py); `model`, the
        model routed to, keeps the job's chunks on that model's queue (see `model_of`). With a
        `queue`, the chunks without a `heavy` image are listed ready to batch in the same step, and
        the answer is whether a wake-up is due (see ChunkScheduler.wake_due); else None. `pipe`: a
        transaction of the caller's to add the job to (it may WATCH keys or hold writes of its own)."""
        total = len(filenames)
        fields = {"meta": json.dumps({"created_at": now_iso(), "total": total, "filenames": filenames}),
                  "total": total, "final": len(failures)}
        if model:
            fields["model"] = json.dumps(model)
        for index in range(total):
            fields[str(index)] = json.dumps(failures.get(index, {"status": QUEUED}))
        if len(failures) == total:
            fields["finished_at"] = now_iso()
        if heavy:
            fields["heavy"] = json.dumps(sorted(heavy))
        with pipe or self.redis.pipeline() as pipe:  # MULTI/EXEC: a job appears whole or not at all
            for index, data in images.items():
                pipe.set(self.image_key(job_id, index), data, ex=self.ttl_s)
            pipe.hset(self.key(job_id), mapping=fields)
            pipe.expire(self.key(job_id), self.ttl_s)
            light = [c for c in chunks if not set(c) & set(heavy)] if queue is not None else []
            self.chunks.schedule(pipe, job_id, chunks, light)
            self._add_callback(pipe, job_id, callback_url, closed=len(failures) == total)
            listing = self.chunks.ready(pipe, queue, job_id, light)  # last: its answers end the list
            answers = pipe.execute()
        if callback_url and len(failures) == total:
            self._callback_due(job_id)
        return self.chunks.wake_due(answers[-listing:], len(light)) if listing else None

    def _add_callback(self, pipe: Pipeline, job_id: str, url: str | None, closed: bool) -> None:
        """A new job's callback record; a job closed on arrival is due at once (as _COUNT_FINAL does)."""
        if url:
            pipe.hset(self.key(job_id), "callback", json.dumps(new_callback(url)))
            if closed:
                pipe.zadd(PENDING_CALLBACKS, {job_id: 0})

    def model_of(self, job_id: str) -> dict | None:
        """The model the job was routed to (or that classified it); None for a job from before
        routing, or gone."""
        model = self.redis.hget(self.key(job_id), "model")
        return json.loads(model) if model else None

    def heavy_images(self, job_id: str) -> list[int]:
        """The job's images that run alone (costly to decode), for a worker queueing its chunks again."""
        return json.loads(self.redis.hget(self.key(job_id), "heavy") or "[]")

    def mark_running(self, job_id: str, indices: list[int]) -> Started | None:
        """Starts a chunk (see _MARK_RUNNING); None if the job expired."""
        return self.mark_all_running([(job_id, indices)])[0]

    def mark_all_running(self, chunks: list[tuple[str, list[int]]]) -> list[Started | None]:
        """Starts chunks of any jobs in one round trip: for each, what mark_running answers."""
        answers = self._run_scripts([(self._mark_running, [self.key(job_id)], indices) for job_id, indices in chunks])
        return [None if a is None else Started(a[0], a[1:]) for a in answers]

    def start_batch(self, task_id: str, queue: str, max_images: int, hold_s: int, linger_s: float = 0) -> "Batch":
        """Takes task `task_id`'s next batch from `queue`'s ready list and starts it, in one round
        trip (see _START_BATCH); finding none, the task lingers `linger_s` more."""
        chunks = self.chunks
        reply = self._start_batch(keys=chunks.take_keys(task_id, queue),
                                  args=[*chunks.take_args(task_id, max_images, hold_s, linger_s), self.key("")])
        redelivered, taken_chunks, left = taken(reply)
        starts = [None if r is None else (Started(r[0][0], r[0][1:]), r[1]) for r in reply[3:]]
        return Batch(redelivered, taken_chunks, left, starts)

    def images(self, job_id: str, indices: list[int]) -> list[bytes | None]:
        """The waiting images' bytes, in one round trip (None where gone)."""
        return self.all_images([(job_id, i) for i in indices])

    def all_images(self, images: list[tuple[str, int]]) -> list[bytes | None]:
        """Bytes of images of any jobs, (job id, index) each, in one round trip (None where gone)."""
        return self.redis.mget([self.image_key(job_id, i) for job_id, i in images]) if images else []

    def finish(self, job_id: str, results: dict[int, dict], model: dict | None = None,
               chunks: list[list[int]] | None = None) -> Written | None:
        """Writes final results (only for images not final yet) and ends the chunks that held them:
        by default one chunk of exactly these images. None if nothing new was written (the job
        expired, or a chunk ran twice)."""
        keys, args = self._finish_call(job_id, results, model, chunks)
        return self._written(job_id, self._finish(keys=keys, args=args))

    def _finish_call(self, job_id: str, results: dict[int, dict], model: dict | None,
                     chunks: list[list[int]] | None) -> tuple[list, list]:
        """The keys and arguments of _FINISH for these results."""
        chunks = [sorted(results)] if chunks is None else chunks
        args = [now_iso(), json.dumps(model) if model else "", self.ttl_s,
                json.dumps([member(job_id, c) for c in chunks])]
        for index, record in results.items():
            args += [index, json.dumps(record)]
        return [self.key(job_id), self.channel(job_id), PENDING, *(self.image_key(job_id, i) for i in results)], args

    def finish_all(self, results: list[tuple[str, list[int], dict[int, dict], dict | None]],
                   task_id: str | None = None) -> list[Written | None]:
        """finish() for chunks of any jobs, (job id, chunk, results, model) each, in one transaction
        that also forgets what task `task_id` took (common/chunks.py): one round trip for a batch.
        What finish() answers, for each."""
        calls = [(self._finish, *self._finish_call(job_id, chunk_results, model, [chunk]))
                 for job_id, chunk, chunk_results, model in results]
        answers = self._run_scripts(calls, [BATCH + task_id] if task_id else [], transaction=True)
        return [self._written(job_id, answer) for (job_id, *_), answer in zip(results, answers)]

    def _written(self, job_id: str, outcome: int | list) -> Written | None:
        """What _COUNT_FINAL answered (a number when nothing new was written), as Written; a job it
        closed with a callback due gets its delivery queued."""
        self._closed(job_id, outcome)
        return Written(outcome[2].decode(), outcome[0] == outcome[1]) if isinstance(outcome, list) else None

    def _run_scripts(self, calls: list[tuple[Script, list, list]], delete: list[str] = (),
                     transaction: bool = False) -> list:
        """Script calls (script, keys, args), then deletions, in one round trip: by SHA, as
        redis-py's pipelined scripts cost a SCRIPT EXISTS round trip each time. A script Redis
        does not hold (a restart emptied its cache) is loaded and the whole call made again,
        which the scripts' idempotence allows."""
        for attempt in range(2):
            try:
                with self.redis.pipeline(transaction=transaction) as pipe:
                    for script, keys, args in calls:
                        pipe.evalsha(script.sha, len(keys), *keys, *args)
                    if delete:
                        pipe.delete(*delete)
                    return pipe.execute()
            except NoScriptError:
                if attempt:
                    raise
                for script in {script for script, _, _ in calls}:
                    script.sha = self.redis.script_load(script.script)
        return []

    def fail(self, job_id: str, chunks: list[list[int]], code: str, message: str) -> None:
        """Ends these chunks with every image failed for the same reason."""
        self.finish(job_id, {i: failure(code, message) for c in chunks for i in c}, chunks=chunks)

    def discard(self, job_id: str, indices: list[int], chunks: list[list[int]]) -> None:
        """Removes a job and its chunks without a trace, with commands Redis allows even when out of
        memory: for a job whose submission failed before its client learnt of it."""
        with self.redis.pipeline() as pipe:
            pipe.delete(self.key(job_id), *(self.image_key(job_id, i) for i in indices))
            if chunks:
                pipe.zrem(PENDING, *(member(job_id, c) for c in chunks))
            pipe.execute()

    def cancel(self, job_id: str) -> Job | None:
        """Cancels the images still queued; the job as it stands then, or None if unknown."""
        total = self.redis.hget(self.key(job_id), "total")
        if total is None:
            return None
        images = [self.image_key(job_id, i) for i in range(int(total))]
        self._closed(job_id, self._cancel(keys=[self.key(job_id), self.channel(job_id), *images],
                                          args=[now_iso(), "", self.ttl_s]))
        return self.get(job_id)

    def _closed(self, job_id: str, outcome: int | list[int]) -> None:
        """`outcome`: what _COUNT_FINAL returned (a number when nothing was counted)."""
        if isinstance(outcome, list) and outcome[3] == 1:
            self._callback_due(job_id)

    def _callback_due(self, job_id: str) -> None:
        if self.on_callback_due is not None:
            self.on_callback_due(job_id)

    def get(self, job_id: str) -> Job | None:
        """The job, or None if unknown or expired."""
        return self._job(job_id, {k.decode(): v.decode() for k, v in self.redis.hgetall(self.key(job_id)).items()})

    @staticmethod
    def _job(job_id: str, fields: dict[str, str]) -> Job | None:
        """The job from its record's fields (None: no record)."""
        if "meta" not in fields:
            return None
        meta = json.loads(fields["meta"])
        return Job(job_id=job_id, created_at=meta["created_at"], filenames=meta["filenames"],
                   finished_at=fields.get("finished_at"),
                   model=json.loads(fields["model"]) if "model" in fields else None,
                   callback=json.loads(fields["callback"]) if "callback" in fields else None,
                   images=[json.loads(fields[str(i)]) for i in range(meta["total"])])

    def _published(self, job_id: str, message: bytes) -> Job | None:
        """The closed job a "done" message carries (see _COUNT_FINAL); None if it carries none (a
        record too large to send, or a worker of an earlier version: just "done")."""
        try:
            items = json.loads(message)
        except (ValueError, TypeError):
            return None
        return self._job(job_id, dict(zip(items[0::2], items[1::2]))) if isinstance(items, list) else None

    @contextmanager
    def watching(self, job_id: str) -> Iterator[Watch]:
        """While the block runs, a Watch: a call that returns the job's "done" message (its closed
        record, or just "done") once it comes, or None after the seconds it is given or on a wake
        that carries no message (a subscription starting or coming back: the caller reads the job).
        Entered before the caller reads or creates the job, so that a finish in between cannot be
        missed. With a listener (the web process's, common/notify.py) it shares the process's one
        subscription; else it has its own."""
        if self.listener is None:
            with self.redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                pubsub.subscribe(self.channel(job_id))
                yield lambda timeout_s: (pubsub.get_message(timeout=timeout_s) or {}).get("data")
            return
        with self.listener.waiting(self.channel(job_id)) as mailbox:
            yield mailbox.take

    def wait(self, job_id: str, timeout_s: float, watch: Watch | None = None) -> Job | None:
        """Long poll: the job once it is finished (as its "done" message carries it: no read), or as
        it stands when `timeout_s` runs out. With `watch`, the caller's (see `watching`) on a job it
        has just created with images to classify: unfinished for certain, it is not read before the
        first wait (a round trip fewer)."""
        deadline = time.monotonic() + timeout_s
        with nullcontext(watch) if watch else self.watching(job_id) as waiting:
            if watch is None:
                job = self.get(job_id)
                if job is None or job.finished:
                    return job
            while True:  # a "done" message, a re-check every RECHECK_S (one may be lost), or the deadline
                message = waiting(max(0.0, min(deadline - time.monotonic(), RECHECK_S)))
                job = (message and self._published(job_id, message)) or self.get(job_id)
                if job is None or job.finished or time.monotonic() >= deadline:
                    return job
