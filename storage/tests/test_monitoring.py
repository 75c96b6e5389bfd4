"""The storage monitor (beat): each active domain's size and free space, read by an Up host of
its data center, written when changed, published, kept in the history, warned about when low."""

import pytest

from inventory.choices import EventSeverity
from inventory.models import Event, StorageDomainSample
from storage.models import GIB
from storage.tasks import monitor_storage_domains_task
from tests.factories import make_cluster, make_host, make_storage_domain

pytestmark = pytest.mark.django_db

# What the simulated agent reads for a directory that does not exist: 1 TiB, half free.
SIM_TOTAL, SIM_FREE = 1024**4, 1024**4 // 2


def test_each_active_domain_is_read_written_published_and_kept(django_capture_on_commit_callbacks, monkeypatch):
    cluster = make_cluster()
    make_host(cluster)
    sd = make_storage_domain(cluster.data_center, total=100 * GIB, free=60 * GIB)
    unreachable = make_storage_domain()  # no host is up in its data center
    sent = []
    monkeypatch.setattr("storage.services.send_now", lambda group, kind, payload: sent.append((group, kind, payload)))

    with django_capture_on_commit_callbacks(execute=True):
        assert monitor_storage_domains_task() == 1

    sd.refresh_from_db()
    assert (sd.total_bytes, sd.free_bytes) == (SIM_TOTAL, SIM_FREE)
    assert [(group, kind, payload["free_bytes"]) for group, kind, payload in sent] == [
        (f"storage.{sd.pk}", "storage.status", SIM_FREE)
    ]
    assert list(StorageDomainSample.objects.values_list("storage_domain_id", "total_bytes", "free_bytes")) == [
        (sd.pk, SIM_TOTAL, SIM_FREE)
    ]
    assert not StorageDomainSample.objects.filter(storage_domain_id=unreachable.pk).exists()

    sent.clear()
    with django_capture_on_commit_callbacks(execute=True):
        monitor_storage_domains_task()
    assert sent == []  # unchanged: nothing written or published, one more sample kept
    assert StorageDomainSample.objects.filter(storage_domain_id=sd.pk).count() == 2


def test_a_domain_falling_below_its_thresholds_gets_an_event():
    cluster = make_cluster()
    make_host(cluster)
    low = make_storage_domain(cluster.data_center, total=SIM_TOTAL, free=SIM_TOTAL, warning_low_space_percent=60)
    critical = make_storage_domain(cluster.data_center, total=SIM_TOTAL, free=SIM_TOTAL, critical_space_gib=600)

    monitor_storage_domains_task()

    events = {e.storage_domain_id: (e.code, e.severity) for e in Event.objects.filter(code__startswith="IRS_DISK")}
    assert events == {
        low.pk: ("IRS_DISK_SPACE_LOW", EventSeverity.WARNING),
        critical.pk: ("IRS_DISK_SPACE_LOW_ERROR", EventSeverity.ERROR),
    }
    monitor_storage_domains_task()
    assert Event.objects.filter(code__startswith="IRS_DISK").count() == 2  # only when crossing
