"""The Celery application: broker and result backend are Redis (REDIS_URL)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "olvm_site.settings")

app = Celery("olvm")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
