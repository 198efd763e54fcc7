"""The shadow task (common/shadow.py): thin, like worker/tasks.py, around worker/shadow.py."""
from __future__ import annotations

from celery import shared_task

from common.queue import SHADOW_TASK
from worker.runtime import runtime
from worker.shadow import shadow_chunk

WAIT_S = 2  # between looks at whether the job's own model is done
MAX_LOOKS = 150  # then the comparison is dropped: the job's own chunk is stuck or lost


@shared_task(name=SHADOW_TASK, bind=True, max_retries=None)
def shadow_images(self, job_id: str, indices: list[int], model: str | None = None) -> None:
    rt = runtime(self.app)
    if not shadow_chunk(rt.jobs, rt.classifier_for(model), job_id, indices, rt.settings.max_pixels,
                        rt.settings.max_decode_mb) and self.request.retries < MAX_LOOKS:
        raise self.retry(countdown=WAIT_S)
