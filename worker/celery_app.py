"""The worker's Celery app: the shared configuration plus this package's tasks."""

from app.broker import make_celery
from app.settings import get_settings

celery = make_celery(get_settings())
celery.conf.include = ["worker.tasks"]
