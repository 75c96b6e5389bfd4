"""The Celery application: broker and result backend are Redis (REDIS_URL)."""

import os
from contextlib import contextmanager

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "olvm_site.settings")

app = Celery("olvm")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@contextmanager
def tasks_inline():
    """Run tasks queued by services in this process, at once, instead of sending them.

    For management commands that must finish their work without a worker (seed_demo)
    and for tests; the task code is the same a worker would run.
    """
    app.loader.import_default_modules()  # runs the autodiscovery of every app's tasks.py
    original = app.send_task

    def run(name, args=None, kwargs=None, **options):
        return app.tasks[name].apply(args=args or (), kwargs=kwargs or {}, throw=True)

    app.send_task = run
    try:
        yield
    finally:
        app.send_task = original
