import pytest
from django.core.exceptions import ValidationError

from hostagent.client import AgentError, SimulatedAgentClient
from inventory.choices import JobStatus
from inventory.exceptions import ConflictError
from inventory.models import Event, Job
from storage import services
from storage.models import StorageDomain
from storage.tasks import create_storage_domain_task
from tests.factories import make_cluster, make_data_center, make_disk, make_host, make_storage_domain

pytestmark = pytest.mark.django_db

TIB = 1024**4
# A path that is no directory here: the simulated agent reports 1 TiB, half free.
NO_SUCH_DIR = "/olvm-test-no-such-dir/data"


@pytest.fixture
def sent_tasks(monkeypatch):
    """Celery tasks sent on commit, as (name, args)."""
    from olvm_site.celery import app

    calls = []
    monkeypatch.setattr(app, "send_task", lambda name, args=None, **kwargs: calls.append((name, args)))
    return calls


def add_domain(dc=None, *, name="data1", path=NO_SUCH_DIR, **kw):
    kw.setdefault("type", "posixfs")
    kw.setdefault("role", "data")
    return services.create_storage_domain(user=None, name=name, path=path, data_center=dc, **kw)


# create_storage_domain --------------------------------------------------------------------


def test_create_storage_domain_is_locked_with_a_job_and_an_enqueued_task(
    admin_user, sent_tasks, django_capture_on_commit_callbacks
):
    dc = make_data_center(name="dc-a")

    with django_capture_on_commit_callbacks(execute=True):
        sd, job = services.create_storage_domain(
            user=admin_user,
            name="data1",
            type="nfs",
            role="data",
            path="nas:/exports/data1",
            data_center=dc,
            critical_space_gib=10,
        )

    assert (sd.status, sd.total_bytes, sd.free_bytes, sd.critical_space_gib) == ("locked", 0, 0, 10)
    assert (job.action_type, job.status, job.storage_domain_id, job.data_center_id) == (
        "AddStorageDomain",
        JobStatus.STARTED,
        sd.pk,
        dc.pk,
    )
    assert list(job.steps.values_list("description", flat=True)) == [
        "Find a host that is Up",
        "Read the size of the storage",
    ]
    assert sent_tasks == [("storage.tasks.create_storage_domain_task", [str(job.pk), str(sd.pk)])]
    event = Event.objects.get(code="USER_ADD_STORAGE_DOMAIN")
    assert (
        event.message == "Storage domain data1 (Data, nfs nas:/exports/data1) was added to data center dc-a by admin."
    )
    assert event.correlation_id == job.correlation_id


def test_create_storage_domain_refuses_unknown_fields():
    with pytest.raises(ValidationError) as exc:
        add_domain(status="active")

    assert list(exc.value.message_dict) == ["status"]


def test_create_storage_domain_refuses_a_path_another_domain_uses():
    add_domain(name="one", path="/srv/a")

    with pytest.raises(ValidationError) as exc:
        add_domain(name="two", path="/srv/a")

    assert exc.value.message_dict == {"path": ["Storage domain one already uses /srv/a."]}


def test_create_storage_domain_refuses_localfs_in_a_shared_data_center():
    dc = make_data_center(name="dc-a")

    with pytest.raises(ValidationError) as exc:
        add_domain(dc, type="localfs", shared=False)

    assert exc.value.message_dict == {
        "type": ["Data center dc-a uses shared storage: a localfs domain cannot join it."]
    }


def test_create_storage_domain_refuses_a_relative_path():
    with pytest.raises(ValidationError) as exc:
        add_domain(path="data")

    assert exc.value.message_dict == {"path": ["Give an absolute directory path."]}
    assert not Job.objects.exists()


# create_storage_domain_task ---------------------------------------------------------------


def test_create_storage_domain_task_reads_the_size_through_an_up_host_and_activates_the_domain():
    dc = make_data_center()
    make_host(make_cluster(dc))
    sd, job = add_domain(dc)

    create_storage_domain_task(str(job.pk), str(sd.pk))

    sd.refresh_from_db()
    assert (sd.status, sd.total_bytes, sd.free_bytes) == ("active", TIB, TIB // 2)
    job.refresh_from_db()
    assert job.status == JobStatus.FINISHED
    assert Event.objects.get(code="USER_ACTIVATED_STORAGE_DOMAIN").correlation_id == str(job.pk)


def test_create_storage_domain_task_reads_a_real_directory(tmp_path):
    dc = make_data_center()
    make_host(make_cluster(dc))
    sd, job = add_domain(dc, path=str(tmp_path))

    create_storage_domain_task(str(job.pk), str(sd.pk))

    sd.refresh_from_db()
    assert sd.status == "active"
    assert 0 < sd.free_bytes <= sd.total_bytes


def test_create_storage_domain_task_leaves_a_domain_without_data_center_unattached():
    make_host()
    sd, job = add_domain(None)

    create_storage_domain_task(str(job.pk), str(sd.pk))

    sd.refresh_from_db()
    assert (sd.status, sd.total_bytes) == ("unattached", TIB)


def test_create_storage_domain_task_without_an_up_host_fails_and_makes_the_domain_inactive():
    dc = make_data_center(name="dc-a")
    make_host(make_cluster(dc), status="maintenance")
    sd, job = add_domain(dc)

    create_storage_domain_task(str(job.pk), str(sd.pk))

    sd.refresh_from_db()
    assert sd.status == "inactive"
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert job.error == "No host is Up in data center dc-a to reach storage domain data1; activate a host first."
    event = Event.objects.get(code="USER_ADD_STORAGE_DOMAIN_FAILED")
    assert event.severity == "error"


def test_create_storage_domain_task_agent_error_fails_and_makes_the_domain_inactive(monkeypatch):
    dc = make_data_center()
    make_host(make_cluster(dc))
    sd, job = add_domain(dc)

    def refuse(self, domain):
        raise AgentError("mount failed: permission denied")

    monkeypatch.setattr(SimulatedAgentClient, "storage_domain_stats", refuse)

    create_storage_domain_task(str(job.pk), str(sd.pk))

    sd.refresh_from_db()
    job.refresh_from_db()
    assert (sd.status, job.status, job.error) == ("inactive", JobStatus.FAILED, "mount failed: permission denied")


def test_create_storage_domain_task_ignores_hosts_of_other_data_centers():
    make_host()  # Up, in another data center
    sd, job = add_domain(make_data_center())

    create_storage_domain_task(str(job.pk), str(sd.pk))

    sd.refresh_from_db()
    assert sd.status == "inactive"


# update_storage_domain --------------------------------------------------------------------


def test_update_storage_domain_changes_fields_and_records_event():
    sd = make_storage_domain(name="data1")

    services.update_storage_domain(sd, user=None, description="fast", critical_space_gib=20)

    sd.refresh_from_db()
    assert (sd.description, sd.critical_space_gib) == ("fast", 20)
    assert (
        Event.objects.get(code="USER_UPDATE_STORAGE_DOMAIN").message
        == "Storage domain data1 was updated (description, critical_space_gib) by the system."
    )


def test_update_storage_domain_path_allowed_while_it_holds_no_disks():
    sd = make_storage_domain()

    services.update_storage_domain(sd, user=None, path="/srv/new", type="posixfs")

    sd.refresh_from_db()
    assert sd.path == "/srv/new"


@pytest.mark.parametrize("change", [{"path": "/srv/elsewhere"}, {"type": "nfs", "path": "nas:/x"}])
def test_update_storage_domain_path_or_type_refused_while_it_holds_disks(change):
    sd = make_storage_domain(name="data1")
    make_disk(sd)

    with pytest.raises(ConflictError, match="holds 1 disk\\(s\\)"):
        services.update_storage_domain(sd, user=None, **change)


def test_update_storage_domain_detach_from_data_center_makes_it_unattached_and_back():
    dc = make_data_center()
    sd = make_storage_domain(dc)

    services.update_storage_domain(sd, user=None, data_center=None)
    sd.refresh_from_db()
    assert sd.status == "unattached"

    services.update_storage_domain(sd, user=None, data_center=dc)
    sd.refresh_from_db()
    assert sd.status == "active"


def test_update_storage_domain_refused_while_locked():
    sd = make_storage_domain(status="locked")

    with pytest.raises(ConflictError, match="locked"):
        services.update_storage_domain(sd, user=None, description="x")


# remove_storage_domain --------------------------------------------------------------------


def test_remove_storage_domain_refused_while_it_holds_disks():
    sd = make_storage_domain(name="data1")
    make_disk(sd)
    make_disk(sd)

    with pytest.raises(ConflictError, match="data1 still holds 2 disk\\(s\\)"):
        services.remove_storage_domain(sd, user=None)
    assert StorageDomain.objects.filter(pk=sd.pk).exists()


def test_remove_empty_storage_domain(admin_user):
    sd = make_storage_domain(name="data1")

    services.remove_storage_domain(sd, user=admin_user)

    assert not StorageDomain.objects.filter(pk=sd.pk).exists()
    assert Event.objects.get(code="USER_REMOVE_STORAGE_DOMAIN").message == "Storage domain data1 was removed by admin."
