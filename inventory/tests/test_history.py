"""Monitoring history: rates from counters, buffered writes, 5-minute averages, retention,
and the series API of hosts, VMs and storage domains."""

import datetime as dt
import time
import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from inventory import history
from inventory.choices import SampleResolution
from inventory.models import HostNicSample, HostSample, StorageDomainSample, VmSample
from tests.factories import make_host, make_storage_domain, make_vm

pytestmark = pytest.mark.django_db

T0 = 1_800_000_000.0  # epoch seconds of the first sample


@pytest.fixture(autouse=True)
def fresh_recorder(settings):
    settings.OLVM_HISTORY_FLUSH_SECONDS = 3600  # written when the test says so
    history.forget()
    yield
    history.forget()


def host_stats(host_id, at, *, busy=(20.0, 5.0), used=(16384, 65536), nics=None) -> dict:
    sample = {
        "id": str(host_id),
        "at": at,
        "cpu": {"user_pct": busy[0], "system_pct": busy[1], "idle_pct": 100 - sum(busy)},
        "memory": {"used_mib": used[0], "total_mib": used[1], "free_mib": used[1] - used[0]},
    }
    if nics is not None:
        sample["nics"] = [{"name": name, "rx_bytes": rx, "tx_bytes": tx} for name, rx, tx in nics]
    return sample


def vm_stats(vm_id, at, *, cpu_ns, rx=0, tx=0, vcpus=2, status="up") -> dict:
    return {
        "id": str(vm_id),
        "vm_id": str(vm_id),
        "at": at,
        "status": status,
        "cpu_time_ns": cpu_ns,
        "vcpus": vcpus,
        "memory_kib": 2 * 1024 * 1024,
        "balloon_kib": 2 * 1024 * 1024,
        "rss_kib": 512 * 1024,
        "nics": [{"mac": "56:6f:00:00:00:01", "rx_bytes": rx, "tx_bytes": tx}],
    }


# Rates from counters ------------------------------------------------------------------------


def test_the_first_sample_gives_levels_the_second_gives_rates():
    host_id, vm_id = uuid.uuid4(), uuid.uuid4()
    first_host = host_stats(host_id, T0, nics=[("eth0", 1000, 500)])
    first_vm = vm_stats(vm_id, T0, cpu_ns=10**12, rx=10_000, tx=2_000)
    history.record_samples(first_host, [first_vm])

    # 5 s later: 5 s of CPU time on 2 vCPUs is half of them; 5,000 bytes in 5 s is 1,000 B/s.
    second_host = host_stats(host_id, T0 + 5, busy=(30.0, 10.0), nics=[("eth0", 6000, 1500)])
    second_vm = vm_stats(vm_id, T0 + 5, cpu_ns=10**12 + 5 * 10**9, rx=15_000, tx=2_500)
    history.record_samples(second_host, [second_vm])

    assert (first_host["cpu_pct"], first_host["mem_pct"], first_host["net_rx_bps"]) == (25.0, 25.0, None)
    assert (first_vm["cpu_pct"], first_vm["mem_pct"], first_vm["net_rx_bps"], first_vm["net_tx_bps"]) == (
        None,
        25.0,
        None,
        None,
    )
    assert (second_host["cpu_pct"], second_host["net_rx_bps"], second_host["net_tx_bps"]) == (40.0, 1000.0, 200.0)
    assert second_host["nics"][0]["rx_bps"] == 1000.0 and second_host["nics"][0]["tx_bps"] == 200.0
    assert (second_vm["cpu_pct"], second_vm["net_rx_bps"], second_vm["net_tx_bps"]) == (50.0, 1000.0, 100.0)


def test_a_counter_that_goes_back_gives_no_rate_and_a_down_vm_no_row():
    host_id, vm_id, down_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    history.record_samples(host_stats(host_id, T0), [vm_stats(vm_id, T0, cpu_ns=10**12, rx=5000)])
    restarted = vm_stats(vm_id, T0 + 5, cpu_ns=10**9, rx=100)  # the VM restarted: counters reset
    stopped = vm_stats(down_id, T0 + 5, cpu_ns=0, status="down")
    history.record_samples(host_stats(host_id, T0 + 5), [restarted, stopped])
    then = vm_stats(vm_id, T0 + 10, cpu_ns=10**9 + 10**9, rx=600)
    history.record_samples(host_stats(host_id, T0 + 10), [then])

    assert (restarted["cpu_pct"], restarted["net_rx_bps"]) == (None, None)
    assert "cpu_pct" not in stopped
    assert (then["cpu_pct"], then["net_rx_bps"]) == (10.0, 100.0)
    assert history.flush() == 3 + 3  # three host rows, three rows of the running VM
    assert not VmSample.objects.filter(vm_id=down_id).exists()


def test_flush_writes_one_row_per_sample_with_its_values():
    host_id, vm_id = uuid.uuid4(), uuid.uuid4()
    history.record_samples(host_stats(host_id, T0, nics=[("eth0", 0, 0)]), [vm_stats(vm_id, T0, cpu_ns=0)])
    history.record_samples(
        host_stats(host_id, T0 + 10, nics=[("eth0", 10_000, 0)]),
        [vm_stats(vm_id, T0 + 10, cpu_ns=2 * 10**9, rx=1000)],
    )

    assert history.flush() == 2 + 2 + 1  # the NIC has a row once it has a rate
    assert history.flush() == 0
    rows = list(VmSample.objects.filter(vm_id=vm_id).order_by("time").values_list("time", "cpu_pct", "net_rx_bps"))
    assert rows == [
        (dt.datetime.fromtimestamp(T0, dt.UTC), None, None),
        (dt.datetime.fromtimestamp(T0 + 10, dt.UTC), 10.0, 100.0),
    ]
    assert list(HostSample.objects.filter(host_id=host_id).values_list("cpu_pct", "mem_pct")) == [(25.0, 25.0)] * 2
    nic = HostNicSample.objects.get(host_id=host_id)
    assert (nic.name, nic.rx_bps, nic.tx_bps, nic.resolution) == ("eth0", 1000.0, 0.0, SampleResolution.RAW)


def test_the_host_rate_sums_its_nics_but_bridges_and_a_reset_counter_gives_that_nic_no_rate():
    host_id = uuid.uuid4()
    first = host_stats(host_id, T0, nics=[("eth0", 10_000, 4_000), ("eth1", 50_000, 4_000), ("ovirtmgmt", 0, 0)])
    first["nics"][2]["bridge"] = True
    history.record_samples(first, [])

    # 10 s later: eth0 +20,000 / +1,000 bytes, eth1's counter went back (the driver reloaded),
    # the bridge carried what also crossed eth0.
    second = host_stats(host_id, T0 + 10, nics=[("eth0", 30_000, 5_000), ("eth1", 700, 300), ("ovirtmgmt", 8_000, 500)])
    second["nics"][2]["bridge"] = True
    history.record_samples(second, [])

    assert [(n["name"], n["rx_bps"], n["tx_bps"]) for n in second["nics"]] == [
        ("eth0", 2000.0, 100.0),
        ("eth1", None, None),
        ("ovirtmgmt", 800.0, 50.0),
    ]
    assert (second["net_rx_bps"], second["net_tx_bps"]) == (2000.0, 100.0)
    assert history.flush() == 2 + 3  # two host rows; the NICs have rows from their second sample
    assert list(
        HostSample.objects.filter(host_id=host_id).order_by("time").values_list("net_rx_bps", "net_tx_bps")
    ) == [
        (None, None),
        (2000.0, 100.0),
    ]
    assert sorted(HostNicSample.objects.filter(host_id=host_id).values_list("name", "rx_bps", "tx_bps")) == [
        ("eth0", 2000.0, 100.0),
        ("eth1", None, None),
        ("ovirtmgmt", 800.0, 50.0),
    ]


def test_a_nic_name_with_odd_characters_is_written_as_it_is():
    host_id, name = uuid.uuid4(), "br\\0\tx"
    history.record_samples(host_stats(host_id, T0, nics=[(name, 0, 0)]), [])
    history.record_samples(host_stats(host_id, T0 + 1, nics=[(name, 10, 20)]), [])

    history.flush()

    assert list(HostNicSample.objects.filter(host_id=host_id).values_list("name", "rx_bps", "tx_bps")) == [
        (name, 10.0, 20.0)
    ]


@pytest.mark.django_db(transaction=True)
def test_once_the_flush_interval_has_passed_the_writer_thread_writes_the_samples(settings):
    settings.OLVM_HISTORY_FLUSH_SECONDS = 0
    host_id = uuid.uuid4()

    history.record_samples(host_stats(host_id, T0), [])  # returns at once: another thread writes

    deadline = time.monotonic() + 5
    while not HostSample.objects.filter(host_id=host_id).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert HostSample.objects.filter(host_id=host_id).count() == 1


def test_a_broken_sample_is_never_the_callers_problem():
    history.record_samples({"id": str(uuid.uuid4()), "at": "not a number"}, [{"id": None}])
    history.record_samples({"id": str(uuid.uuid4()), "at": T0, "cpu": "busy", "memory": []}, [{"at": T0}])

    assert history.flush() == 1  # the second host, with unknown figures
    assert list(HostSample.objects.values_list("cpu_pct", "mem_pct")) == [(None, None)]


# Downsampling and retention -------------------------------------------------------------------


def at(now, **delta):
    return now - dt.timedelta(**delta)


def test_compact_averages_samples_older_than_an_hour_per_five_minutes_and_drops_old_averages():
    for model in (HostSample, VmSample, HostNicSample, StorageDomainSample):
        model.objects.all().delete()  # compact() works on every row there is
    now = dt.datetime(2026, 3, 1, 12, 2, 30, tzinfo=dt.UTC)
    vm_a, vm_b = uuid.uuid4(), uuid.uuid4()
    raw = SampleResolution.RAW
    VmSample.objects.bulk_create(
        [
            # The bucket 10:00-10:05 of VM a: two samples, one with an unknown rate.
            VmSample(vm_id=vm_a, time=dt.datetime(2026, 3, 1, 10, 0, 5, tzinfo=dt.UTC), cpu_pct=10, mem_pct=50),
            VmSample(
                vm_id=vm_a,
                time=dt.datetime(2026, 3, 1, 10, 4, 55, tzinfo=dt.UTC),
                cpu_pct=None,
                mem_pct=70,
                net_rx_bps=100,
            ),
            # 10:55-11:00 of VM a and VM b: each its own average.
            VmSample(vm_id=vm_a, time=dt.datetime(2026, 3, 1, 10, 56, tzinfo=dt.UTC), cpu_pct=30),
            VmSample(vm_id=vm_b, time=dt.datetime(2026, 3, 1, 10, 57, tzinfo=dt.UTC), cpu_pct=40),
            VmSample(vm_id=vm_b, time=dt.datetime(2026, 3, 1, 10, 58, tzinfo=dt.UTC), cpu_pct=60),
            # Within the hour (and the bucket the hour boundary cuts, 11:00-11:05): kept as they are.
            VmSample(vm_id=vm_a, time=dt.datetime(2026, 3, 1, 11, 1, tzinfo=dt.UTC), cpu_pct=99),
            VmSample(vm_id=vm_a, time=dt.datetime(2026, 3, 1, 11, 30, tzinfo=dt.UTC), cpu_pct=1),
            # An average from 31 days ago: expired.
            VmSample(vm_id=vm_a, time=at(now, days=31), cpu_pct=5, resolution=SampleResolution.FIVE_MINUTES),
        ]
    )
    StorageDomainSample.objects.bulk_create(
        [
            StorageDomainSample(storage_domain_id=vm_a, time=at(now, hours=2), total_bytes=1000, free_bytes=402),
            StorageDomainSample(storage_domain_id=vm_a, time=at(now, hours=2), total_bytes=1000, free_bytes=400),
        ]
    )

    done = history.compact(now)

    rows = VmSample.objects.order_by("vm_id", "time").values_list(
        "vm_id", "time", "resolution", "cpu_pct", "mem_pct", "net_rx_bps"
    )
    five = SampleResolution.FIVE_MINUTES
    assert sorted(rows, key=lambda row: (row[0] != vm_a, row[1])) == [
        (vm_a, dt.datetime(2026, 3, 1, 10, 0, tzinfo=dt.UTC), five, 10.0, 60.0, 100.0),
        (vm_a, dt.datetime(2026, 3, 1, 10, 55, tzinfo=dt.UTC), five, 30.0, None, None),
        (vm_a, dt.datetime(2026, 3, 1, 11, 1, tzinfo=dt.UTC), raw, 99.0, None, None),
        (vm_a, dt.datetime(2026, 3, 1, 11, 30, tzinfo=dt.UTC), raw, 1.0, None, None),
        (vm_b, dt.datetime(2026, 3, 1, 10, 55, tzinfo=dt.UTC), five, 50.0, None, None),
    ]
    assert done["VmSample"] == 5 + 1  # five samples averaged away, one expired average
    assert list(StorageDomainSample.objects.values_list("resolution", "total_bytes", "free_bytes")) == [
        (five, 1000, 401)
    ]
    assert history.compact(now) == {"HostSample": 0, "VmSample": 0, "HostNicSample": 0, "StorageDomainSample": 0}


# The series API -----------------------------------------------------------------------------


def test_a_host_series_is_its_samples_then_averages_in_time_order(api_client):
    host = make_host()
    now = timezone.now()
    HostSample.objects.bulk_create(
        [
            HostSample(host_id=host.pk, time=at(now, minutes=20), cpu_pct=20, mem_pct=40, net_rx_bps=1.5),
            HostSample(host_id=host.pk, time=at(now, minutes=50), cpu_pct=10, mem_pct=None),
            HostSample(host_id=host.pk, time=at(now, hours=3), cpu_pct=7, resolution=SampleResolution.FIVE_MINUTES),
            HostSample(host_id=uuid.uuid4(), time=at(now, minutes=10), cpu_pct=99),  # another host
        ]
    )
    url = f"/api/v1/hosts/{host.pk}/history/"

    with CaptureQueriesContext(connection) as queries:
        response = api_client.get(url, {"metric": "cpu,memory"})
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["id"], body["metrics"], body["units"]) == (
        str(host.pk),
        ["cpu", "memory"],
        {"cpu": "%", "memory": "%"},
    )
    assert [point[1:] for point in body["points"]] == [[10.0, None], [20.0, 40.0]]  # the last hour by default
    assert body["points"][0][0] == history.json_time(at(now, minutes=50))
    assert len(queries) == 2  # the host, its samples

    since = history.json_time(at(now, hours=4))
    body = api_client.get(url, {"metric": "cpu", "since": since}).json()
    assert [point[1] for point in body["points"]] == [7.0, 10.0, 20.0]
    body = api_client.get(url, {"since": since}).json()
    assert body["metrics"] == ["cpu", "memory", "net_rx", "net_tx"]
    assert body["points"][-1][1:] == [20.0, 40.0, 1.5, None]


def test_a_vm_series_a_host_nic_series_and_a_storage_domain_series(api_client):
    vm, host, sd = make_vm(), make_host(), make_storage_domain()
    now = timezone.now()
    VmSample.objects.create(vm_id=vm.pk, time=at(now, minutes=1), cpu_pct=12.5, net_tx_bps=3)
    HostNicSample.objects.create(host_id=host.pk, name="eth1", time=at(now, minutes=1), rx_bps=8, tx_bps=9)
    StorageDomainSample.objects.create(storage_domain_id=sd.pk, time=at(now, minutes=1), total_bytes=10, free_bytes=4)

    vm_body = api_client.get(f"/api/v1/vms/{vm.pk}/history/", {"metric": "cpu,net_tx"}).json()
    nic_body = api_client.get(f"/api/v1/hosts/{host.pk}/history/", {"nic": "eth1"}).json()
    sd_body = api_client.get(f"/api/v1/storage-domains/{sd.pk}/history/", {"metric": "free"}).json()

    assert [point[1:] for point in vm_body["points"]] == [[12.5, 3.0]]
    assert (nic_body["metrics"], [point[1:] for point in nic_body["points"]]) == (["net_rx", "net_tx"], [[8.0, 9.0]])
    assert (sd_body["units"], [point[1:] for point in sd_body["points"]]) == ({"free": "B"}, [[4]])


def test_a_series_query_that_makes_no_sense_is_a_400(api_client):
    host, sd = make_host(), make_storage_domain()
    url = f"/api/v1/hosts/{host.pk}/history/"

    assert api_client.get(url, {"metric": "cpu,disk"}).json() == {
        "metric": ["Unknown metric(s) disk; use cpu, memory, net_rx, net_tx."]
    }
    assert api_client.get(url, {"since": "yesterday"}).status_code == 400
    assert api_client.get(url, {"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}).status_code == 400
    assert api_client.get(f"/api/v1/storage-domains/{sd.pk}/history/", {"metric": "cpu"}).status_code == 400
    assert api_client.get(f"/api/v1/hosts/{uuid.uuid4()}/history/").status_code == 404


# The ingest handler's hook ----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_stats_an_agent_pushes_get_their_rates_in_the_cache_and_rows_in_the_history():
    from inventory import ingest

    ingest.forget_state()
    vm = make_vm(status="up")
    host_id = str(vm.run_on_host_id)

    def stats(at, cpu_ns):
        vm_stats_ = {"vm_id": str(vm.pk), "status": "up", "cpu_time_ns": cpu_ns, "vcpus": 1}
        message = {"kind": "stats", "at": at, "host": {"cpu": {"user_pct": 3, "system_pct": 1}}, "vms": [vm_stats_]}
        agent = {"version": "0.1", "driver": "sim", "simulated": True, "boot_id": "b", "hostname": "h"}
        return {"agent": agent, "seq": 1, "sent_at": at, "messages": [message]}

    now = time.time()
    assert ingest.handle(host_id, stats(now - 5, 0))[0] == 200
    assert ingest.handle(host_id, stats(now, 10**9))[0] == 200  # 1 s of CPU in 5 s on one vCPU

    assert ingest.latest_stats("vm", vm.pk)["cpu_pct"] == 20.0
    assert ingest.latest_stats("host", host_id)["cpu_pct"] == 4.0
    assert history.flush() == 4
    assert list(VmSample.objects.filter(vm_id=vm.pk).order_by("time").values_list("cpu_pct", flat=True)) == [
        None,
        20.0,
    ]
