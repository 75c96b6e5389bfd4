"""Bench: API VM list and portal VM list at 1,000 hosts and 20,000 VMs (PostgreSQL).

Builds the inventory once in its own database (DATABASE_URL, default olvm_bench), then
times, in-process through Django's full request stack:
- GET /api/v1/vms/?status=up&cluster=<id>&ordering=-memory_mib&limit=50 (a page of 50,
  a filter and an ordering),
- GET /vms/?status=up&sort=name (the portal list page rendered server-side),
printing p50 / p95 and the queries per request. Target: p95 under 150 ms, and the query
count the same as with a tiny inventory.

    .venv/bin/python bench/api_list.py [--hosts 1000] [--vms 20000] [--requests 60]
"""

import argparse
import random
import time
import uuid

from _setup import django_on_bench_db, percentile


def build(hosts: int, vms: int) -> None:
    from django.db import transaction

    from compute.models import BLANK_TEMPLATE_ID, VirtualMachine
    from inventory.models import Cluster, DataCenter, Host
    from networking.models import MacPool

    if VirtualMachine.objects.count() >= vms and Host.objects.count() >= hosts:
        return
    print(f"building {hosts} hosts and {vms} VMs ...", flush=True)
    started = time.perf_counter()
    VirtualMachine.objects.all().delete()
    Host.objects.all().delete()
    Cluster.objects.all().delete()
    DataCenter.objects.all().delete()
    with transaction.atomic():
        pool = MacPool.objects.get(name="Default")
        dc = DataCenter.objects.create(name="bench-dc")
        clusters = [Cluster.objects.create(data_center=dc, name=f"cluster-{i}", mac_pool=pool) for i in range(10)]
        host_rows = [
            Host(
                id=uuid.uuid4(),
                cluster=clusters[i % 10],
                name=f"host-{i:04d}",
                address=f"10.1.{i // 250}.{i % 250}",
                status="up",
                memory_mib=262144,
                cpu_threads=64,
                simulated=True,
            )
            for i in range(hosts)
        ]
        Host.objects.bulk_create(host_rows, batch_size=1000)
        rng = random.Random(7)
        statuses = ["up"] * 6 + ["down"] * 3 + ["paused"]
        rows = []
        for i in range(vms):
            host = host_rows[i % hosts]
            status = rng.choice(statuses)
            rows.append(
                VirtualMachine(
                    name=f"vm-{i:05d}",
                    cluster_id=host.cluster_id,
                    data_center=dc,
                    template_id=BLANK_TEMPLATE_ID,
                    status=status,
                    run_on_host=host if status != "down" else None,
                    memory_mib=rng.choice([512, 1024, 2048, 4096]),
                    vcpus=rng.choice([1, 2, 4]),
                    guaranteed_memory_mib=512,
                )
            )
        VirtualMachine.objects.bulk_create(rows, batch_size=2000)
    print(f"built in {time.perf_counter() - started:.1f} s", flush=True)


def measure(client, url: str, requests: int) -> tuple[list[float], int, int]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.get(url)  # warm caches and the connection
    timings = []
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    queries = len(ctx.captured_queries)
    assert response.status_code == 200, (url, response.status_code)
    for _ in range(requests):
        started = time.perf_counter()
        response = client.get(url)
        timings.append((time.perf_counter() - started) * 1000)
    return timings, queries, response.status_code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--vms", type=int, default=20000)
    parser.add_argument("--requests", type=int, default=60)
    args = parser.parse_args()
    django_on_bench_db()
    build(args.hosts, args.vms)
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")  # fresh planner statistics, as autovacuum would keep them

    from django.contrib.auth import get_user_model
    from django.test import Client

    from inventory.models import Cluster

    user, _ = get_user_model().objects.get_or_create(
        username="bench", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client()
    client.force_login(user)
    cluster = Cluster.objects.get(name="cluster-3")
    urls = {
        "API VM list (filter + ordering, page of 50)": (
            f"/api/v1/vms/?status=up&cluster={cluster.pk}&ordering=-memory_mib&limit=50"
        ),
        "Portal VM list page (filter + sort, page of 50)": "/vms/?status=up&sort=name",
    }
    from compute.models import VirtualMachine
    from inventory.models import Host

    print(f"inventory: {Host.objects.count()} hosts, {VirtualMachine.objects.count()} VMs")
    for label, url in urls.items():
        timings, queries, _ = measure(client, url, args.requests)
        print(
            f"{label}: p50 {percentile(timings, 50):.1f} ms, p95 {percentile(timings, 95):.1f} ms, "
            f"max {max(timings):.1f} ms, {queries} queries/request ({args.requests} requests) [{url}]"
        )


if __name__ == "__main__":
    main()
