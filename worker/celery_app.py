"""The worker's entry point: `celery -A worker.celery_app worker`."""
from common.settings import Settings
from worker import create_worker

app = create_worker(Settings.from_env())
