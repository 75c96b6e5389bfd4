"""A real Celery worker against Redis runs a Job to the end (no eager mode, no mocks)."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection

from inventory import services
from inventory.choices import HostStatus, JobStatus
from inventory.models import Event, Host, Job
from tests.factories import make_cluster

ROOT = Path(__file__).resolve().parent.parent


def database_url() -> str:
    s = connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{s['NAME']}"
    user = s.get("USER") or "postgres"
    password = f":{s['PASSWORD']}" if s.get("PASSWORD") else ""
    return f"postgres://{user}{password}@{s.get('HOST') or '127.0.0.1'}:{s.get('PORT') or 5432}/{s['NAME']}"


@pytest.fixture
def celery_worker_process():
    if connection.settings_dict["ENGINE"].endswith("sqlite3") and connection.settings_dict["NAME"].startswith("file:"):
        pytest.fail("The worker test needs a database another process can open (PostgreSQL, DATABASE_URL).")
    env = {**os.environ, "DATABASE_URL": database_url(), "PYTHONPATH": str(ROOT)}
    log = open(ROOT / "var" / "test-celery-worker.log", "w") if (ROOT / "var").is_dir() else subprocess.DEVNULL
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "olvm_site",
            "worker",
            "--pool",
            "solo",
            "-Q",
            "default",
            "-l",
            "info",
            "--without-mingle",
            "--without-gossip",
            "--without-heartbeat",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    yield proc
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_for(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_deploys_a_simulated_host(celery_worker_process, admin_user):
    cluster = make_cluster()
    host, job = services.add_host(user=admin_user, cluster=cluster, name="sim-01", address="sim-01.lab", simulated=True)
    assert Job.objects.get(pk=job.pk).status == JobStatus.STARTED

    finished = wait_for(lambda: Job.objects.get(pk=job.pk).status != JobStatus.STARTED)

    assert finished, "the worker did not end the job within 60 s"
    job.refresh_from_db()
    host = Host.objects.get(pk=host.pk)
    assert (job.status, job.progress) == (JobStatus.FINISHED, 100)
    assert host.status == HostStatus.UP
    assert host.cpu_threads > 0 and host.memory_mib > 0
    assert Event.objects.filter(code="VDS_DETECTED", host_id=host.pk).exists()
