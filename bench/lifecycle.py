"""Bench: start and stop of one lab VM through the engine versus direct libvirt calls.

Through the engine: `POST /api/v1/vms/<id>/start/` (Django's full request stack,
in-process) -> a real Celery worker (a subprocess) -> the host agent over mutual TLS ->
libvirt on a lab host; timed until the VM's status is `up` in the database (what the API
and the portal then show). Stop (power off) likewise, until `down`.

Directly: the very domain the engine started (its live XML, under another name and UUID)
created and destroyed with libvirt-python over `qemu+tcp` on the same lab host.

The difference of the medians is what the engine adds (rounds alternate engine and
direct, and the round-by-round difference is printed too). Target: under 100 ms to a start.
Needs root (the lab: two hosts in network namespaces; an existing lab is reused).

    .venv/bin/python bench/lifecycle.py [--rounds 10]
"""

import argparse
import os
import re
import subprocess
import sys
import time
import uuid

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/olvm_bench_lifecycle")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/14")
os.environ.setdefault("OLVM_INGEST_LISTEN", "127.0.0.1:54398,10.213.0.1:54398")

from _setup import ROOT, django_on_bench_db, percentile  # noqa: E402

POLL = 0.002  # seconds between status reads


def wait_status(vm_id, status: str, timeout: float = 120) -> None:
    from compute.models import VirtualMachine

    deadline = time.monotonic() + timeout
    while VirtualMachine.objects.values_list("status", flat=True).get(pk=vm_id) != status:
        if time.monotonic() > deadline:
            raise SystemExit(f"the VM did not reach {status} within {timeout} s")
        time.sleep(POLL)


def wait_jobs_done(vm_id, timeout: float = 60) -> None:
    """The action's Job ends just after it recorded the status (not timed)."""
    from inventory.models import Job

    deadline = time.monotonic() + timeout
    while Job.objects.filter(vm_id=vm_id, status="started").exists():
        if time.monotonic() > deadline:
            raise SystemExit("a Job of the VM did not end")
        time.sleep(0.01)


def start_worker() -> subprocess.Popen:
    log = open(ROOT / "var" / "bench-lifecycle-worker.log", "w")
    return subprocess.Popen(
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
            "default,slow",
            "-l",
            "warning",
            "--without-mingle",
            "--without-gossip",
            "--without-heartbeat",
        ],  # fmt: skip
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def summary(label: str, values: list[float]) -> str:
    return f"{label}: p50 {percentile(values, 50):.0f} ms, p95 {percentile(values, 95):.0f} ms (n={len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    django_on_bench_db()

    import libvirt
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from rest_framework.test import APIClient

    from compute.models import Template, VirtualMachine
    from compute.services import create_vm
    from hostagent.ingest_server import IngestServer
    from hostagent.lab import core
    from inventory import certs, ingest
    from inventory.lab import register_lab
    from inventory.models import Host
    from olvm_site.celery import tasks_inline

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    print("lab up (2 hosts) ...", flush=True)
    core.up(2, core.DEFAULT_STATE_DIR, probe_kvm=False)
    paths = certs.ingest_server_cert()
    listener = IngestServer(
        ingest.handle,
        listen=certs.ingest_listen(),
        cert_file=paths.cert_file,
        key_file=paths.key_file,
        ca_file=paths.ca_file,
    )
    listener.start()
    user, _ = get_user_model().objects.get_or_create(
        username="bench", defaults={"is_staff": True, "is_superuser": True}
    )
    with tasks_inline():
        register_lab(core.lab_info(), core.status(), user=user)
        for host in Host.objects.filter(address__startswith="10.213.0.").exclude(status="up"):
            raise SystemExit(f"host {host.name} is {host.status}: {host.status_detail}")
        vm = VirtualMachine.objects.filter(name="bench-life").first()
        if vm is None:
            vm, _ = create_vm(
                user=user,
                cluster=Host.objects.get(name="h1").cluster,
                name="bench-life",
                template=Template.objects.get(name="tiny"),
                memory_mib=256,
            )
    vm.refresh_from_db()
    if vm.status != "down":
        raise SystemExit(f"VM bench-life is {vm.status}; stop it first")
    client = APIClient()
    client.force_authenticate(user)
    worker = start_worker()
    engine_start, engine_stop, direct_start, direct_stop = [], [], [], []
    xml = host = None
    try:
        time.sleep(3)  # the worker connects to the broker
        # Rounds alternate engine and direct, so whatever else the machine does at a moment
        # weighs on both alike; the first round warms the worker, the agent and libvirt.
        for round_no in range(args.rounds + 1):
            t0 = time.perf_counter()
            response = client.post(f"/api/v1/vms/{vm.pk}/start/")
            assert response.status_code == 202, response.content
            wait_status(vm.pk, "up")
            start_ms = (time.perf_counter() - t0) * 1000
            wait_jobs_done(vm.pk)
            if xml is None:
                host = VirtualMachine.objects.get(pk=vm.pk).run_on_host
                conn = libvirt.open(f"qemu+tcp://{host.address}/system")
                xml = conn.lookupByUUIDString(str(vm.pk)).XMLDesc(0)
                direct_xml = re.sub(r"<uuid>[^<]+</uuid>", f"<uuid>{uuid.uuid4()}</uuid>", xml, count=1)
                direct_xml = re.sub(r"<name>[^<]+</name>", "<name>bench-life-direct</name>", direct_xml, count=1)
            t0 = time.perf_counter()
            response = client.post(f"/api/v1/vms/{vm.pk}/stop/")
            assert response.status_code == 202, response.content
            wait_status(vm.pk, "down")
            stop_ms = (time.perf_counter() - t0) * 1000
            wait_jobs_done(vm.pk)
            t0 = time.perf_counter()
            dom = conn.createXML(direct_xml, 0)
            direct_start_ms = (time.perf_counter() - t0) * 1000
            t0 = time.perf_counter()
            dom.destroy()
            direct_stop_ms = (time.perf_counter() - t0) * 1000
            if round_no:
                engine_start.append(start_ms)
                engine_stop.append(stop_ms)
                direct_start.append(direct_start_ms)
                direct_stop.append(direct_stop_ms)
        conn.close()
    finally:
        worker.terminate()
        worker.wait(timeout=20)
        listener.stop()
    print(
        f"host {host.name} ({host.address}), TCG guest of 256 MiB, {args.rounds} rounds, "
        f"database {settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]}"
    )
    print(summary("engine start (API call -> status up)", engine_start))
    print(summary("direct start (libvirt createXML)    ", direct_start))
    print(summary("engine stop  (API call -> status down)", engine_stop))
    print(summary("direct stop  (libvirt destroy)       ", direct_stop))
    added = percentile(engine_start, 50) - percentile(direct_start, 50)
    paired = [e - d for e, d in zip(engine_start, direct_start, strict=True)]
    print(summary("engine - direct, round by round     ", paired))
    print(f"the engine adds {added:.0f} ms to a start (p50 difference; target < 100 ms), "
          f"{percentile(engine_stop, 50) - percentile(direct_stop, 50):.0f} ms to a stop")  # fmt: skip


if __name__ == "__main__":
    main()
