import threading

import pytest
from django.core.exceptions import ValidationError
from django.db import connection, transaction

from inventory.exceptions import ConflictError
from inventory.models import Event
from networking import services
from networking.models import MacPool, VmNic
from tests.factories import make_cluster, make_vm

pytestmark = pytest.mark.django_db


def small_pool(name="small", first="56:6f:00:00:00:00", last="56:6f:00:00:00:03", **kw):
    return services.create_mac_pool(user=None, name=name, ranges=[{"from": first, "to": last}], **kw)


def allocate(pool):
    with transaction.atomic():
        return services.allocate_mac(pool)


# create / update / remove -----------------------------------------------------------------


def test_create_mac_pool_sorts_and_normalizes_ranges_and_records_event(admin_user):
    # when
    pool = services.create_mac_pool(
        user=admin_user,
        name="lab",
        ranges=[
            {"from": "56-6F-00-00-01-00", "to": "56:6f:00:00:01:0f"},
            {"from": "56:6f:00:00:00:00", "to": "56:6f:00:00:00:0f"},
        ],
        description="lab pool",
    )

    # then
    assert pool.ranges == [
        {"from": "56:6f:00:00:00:00", "to": "56:6f:00:00:00:0f"},
        {"from": "56:6f:00:00:01:00", "to": "56:6f:00:00:01:0f"},
    ]
    assert pool.size == 32
    event = Event.objects.get(code="MAC_POOL_ADD_SUCCESS")
    assert event.message == "MAC pool lab (32 addresses) was added by admin."
    assert event.object_id == pool.pk
    assert event.username == "admin"


def test_create_mac_pool_refuses_overlapping_ranges():
    with pytest.raises(ValidationError) as exc:
        services.create_mac_pool(
            user=None,
            name="bad",
            ranges=[
                {"from": "56:6f:00:00:00:00", "to": "56:6f:00:00:00:10"},
                {"from": "56:6f:00:00:00:10", "to": "56:6f:00:00:00:20"},
            ],
        )

    assert exc.value.message_dict == {"ranges": ["Ranges overlap."]}
    assert not MacPool.objects.filter(name="bad").exists()


def test_update_mac_pool_changes_ranges_and_records_event():
    pool = small_pool()

    services.update_mac_pool(pool, user=None, ranges=[{"from": "56:6f:00:00:00:00", "to": "56:6f:00:00:00:07"}])

    pool.refresh_from_db()
    assert pool.size == 8
    assert Event.objects.get(code="MAC_POOL_EDIT_SUCCESS").message == "MAC pool small was updated (ranges)."


def test_update_mac_pool_refuses_to_disallow_duplicates_while_nics_share_a_mac():
    # given two NICs with the same MAC in a pool allowing duplicates
    pool = small_pool(allow_duplicates=True)
    vm = make_vm(make_cluster(mac_pool=pool))
    services.create_nic(vm, user=None, mac="56:6f:00:00:00:01")
    services.create_nic(vm, user=None, mac="56:6f:00:00:00:01")

    # when / then
    with pytest.raises(ConflictError, match="sharing MAC addresses \\(56:6f:00:00:00:01\\)"):
        services.update_mac_pool(pool, user=None, allow_duplicates=False)
    pool.refresh_from_db()
    assert pool.allow_duplicates is True


def test_remove_mac_pool_refused_while_a_cluster_uses_it():
    pool = small_pool()
    make_cluster(name="c1", mac_pool=pool)

    with pytest.raises(ConflictError, match="used by cluster\\(s\\) c1"):
        services.remove_mac_pool(pool, user=None)
    assert MacPool.objects.filter(pk=pool.pk).exists()


def test_remove_mac_pool_refused_while_a_nic_holds_one_of_its_macs():
    # given a NIC made while its cluster used the pool, then the cluster moved to another pool
    pool = small_pool()
    cluster = make_cluster(mac_pool=pool)
    services.create_nic(make_vm(cluster), user=None)
    cluster.mac_pool = MacPool.objects.get(name="Default")
    cluster.save()

    with pytest.raises(ConflictError, match="still has 1 NIC"):
        services.remove_mac_pool(pool, user=None)


def test_remove_mac_pool_refused_for_the_default_pool():
    with pytest.raises(ConflictError, match="Default MAC pool"):
        services.remove_mac_pool(MacPool.objects.get(name="Default"), user=None)


def test_remove_unused_mac_pool(admin_user):
    pool = small_pool()

    services.remove_mac_pool(pool, user=admin_user)

    assert not MacPool.objects.filter(pk=pool.pk).exists()
    assert Event.objects.get(code="MAC_POOL_REMOVE_SUCCESS").message == "MAC pool small was removed by admin."


# allocate_mac -----------------------------------------------------------------------------


def test_allocate_mac_hands_out_addresses_in_order_and_stores_the_cursor():
    pool = small_pool()

    macs = [allocate(pool), allocate(pool)]

    assert macs == ["56:6f:00:00:00:00", "56:6f:00:00:00:01"]
    pool.refresh_from_db()
    assert pool.cursor == 2


def test_allocate_mac_walks_across_ranges():
    pool = services.create_mac_pool(
        user=None,
        name="two",
        ranges=[
            {"from": "56:6f:00:00:00:00", "to": "56:6f:00:00:00:00"},
            {"from": "56:6f:00:00:01:00", "to": "56:6f:00:00:01:00"},
        ],
    )

    assert [allocate(pool), allocate(pool)] == ["56:6f:00:00:00:00", "56:6f:00:00:01:00"]


def test_allocate_mac_skips_macs_used_by_nics_of_the_pool():
    # given :00 allocated and :01 typed by hand on a NIC
    pool = small_pool()
    vm = make_vm(make_cluster(mac_pool=pool))
    services.create_nic(vm, user=None)
    services.create_nic(vm, user=None, mac="56:6f:00:00:00:01")

    # when
    nic, _ = services.create_nic(vm, user=None)

    # then
    assert nic.mac == "56:6f:00:00:00:02"
    pool.refresh_from_db()
    assert pool.cursor == 3


def test_allocate_mac_wraps_around_to_freed_addresses():
    # given a full pool of 4, then the first NIC removed
    pool = small_pool()
    vm = make_vm(make_cluster(mac_pool=pool))
    nics = [services.create_nic(vm, user=None)[0] for _ in range(4)]
    services.remove_nic(nics[0], user=None)

    # when
    nic, _ = services.create_nic(vm, user=None)

    # then
    assert nic.mac == "56:6f:00:00:00:00"
    pool.refresh_from_db()
    assert pool.cursor == 1


def test_allocate_mac_refuses_when_the_pool_is_exhausted():
    pool = small_pool(last="56:6f:00:00:00:01")
    vm = make_vm(make_cluster(mac_pool=pool))
    services.create_nic(vm, user=None)
    services.create_nic(vm, user=None)

    with pytest.raises(ValidationError) as exc:
        services.create_nic(vm, user=None)

    assert exc.value.message_dict == {"mac": ["MAC pool small is exhausted: all 2 of its addresses are in use."]}
    assert vm.nics.count() == 2


def test_allocate_mac_ignores_nics_of_other_pools():
    # given a NIC of another pool holding :00
    pool = small_pool()
    other = small_pool(name="other", allow_duplicates=True)
    services.create_nic(make_vm(make_cluster(mac_pool=other)), user=None, mac="56:6f:00:00:00:00")

    assert allocate(pool) == "56:6f:00:00:00:00"


@pytest.mark.django_db(transaction=True)
def test_concurrent_nic_creation_never_hands_out_a_mac_twice():
    # given 8 VMs in a cluster whose pool has 64 addresses
    pool = small_pool(last="56:6f:00:00:00:3f")
    cluster = make_cluster(mac_pool=pool)
    vms = [make_vm(cluster) for _ in range(8)]
    start = threading.Barrier(len(vms))
    errors = []

    def add_nics(vm):
        try:
            start.wait(timeout=10)
            for _ in range(5):
                services.create_nic(vm, user=None)
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    # when all VMs get 5 NICs at the same time
    threads = [threading.Thread(target=add_nics, args=(vm,)) for vm in vms]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    # then 40 NICs hold 40 different MACs, the first 40 of the pool
    assert errors == []
    macs = list(VmNic.objects.filter(mac_pool=pool).values_list("mac", flat=True))
    assert len(macs) == 40
    assert len(set(macs)) == 40
    assert set(macs) == {f"56:6f:00:00:00:{i:02x}" for i in range(40)}
    pool.refresh_from_db()
    assert pool.cursor == 40


@pytest.mark.django_db(transaction=True)
def test_concurrent_allocate_mac_calls_get_different_addresses():
    pool = small_pool(last="56:6f:00:00:00:ff")
    start = threading.Barrier(10)
    results, errors = [], []

    def grab():
        try:
            start.wait(timeout=10)
            for _ in range(10):
                results.append(allocate(pool))
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=grab) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert len(results) == 100
    assert len(set(results)) == 100
