"""The audit log and Jobs: what every service writes about what it did.

`record_event` writes one Event and publishes it to the event stream after commit.
`create_job` opens a Job with its steps; tasks drive it with `JobProgress`.
"""

import datetime
import functools
import uuid
from collections.abc import Sequence

from django.db import models, transaction
from django.db.models import F, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from .choices import EventSeverity, JobStatus, ObjectType, StepStatus
from .models import Cluster, DataCenter, Event, Host, Job, Step
from .publish import publish

EVENTS_GROUP = "events"
JOBS_GROUP = "jobs"


def object_refs(obj: models.Model | None) -> dict:
    """The ids an Event or Job keeps about `obj` and the objects above it."""
    if obj is None:
        return {"object_type": ObjectType.SYSTEM}
    refs: dict = {"object_id": obj.pk, "object_name": str(obj)[:255]}
    label = obj._meta.label
    if isinstance(obj, DataCenter):
        refs.update(object_type=ObjectType.DATA_CENTER, data_center_id=obj.pk)
    elif isinstance(obj, Cluster):
        refs.update(object_type=ObjectType.CLUSTER, cluster_id=obj.pk, data_center_id=obj.data_center_id)
    elif isinstance(obj, Host):
        refs.update(
            object_type=ObjectType.HOST,
            host_id=obj.pk,
            cluster_id=obj.cluster_id,
            data_center_id=obj.cluster.data_center_id,
        )
    elif label == "compute.VirtualMachine":
        refs.update(
            object_type=ObjectType.VM,
            vm_id=obj.pk,
            cluster_id=obj.cluster_id,
            data_center_id=obj.data_center_id,
            host_id=obj.run_on_host_id,
        )
    elif label == "compute.Template":
        refs.update(
            object_type=ObjectType.TEMPLATE,
            cluster_id=obj.cluster_id,
            data_center_id=obj.cluster.data_center_id if obj.cluster_id else None,
        )
    elif label == "compute.InstanceType":
        refs.update(object_type=ObjectType.INSTANCE_TYPE)
    elif label == "compute.Snapshot":
        refs.update(object_type=ObjectType.SNAPSHOT, vm_id=obj.vm_id, cluster_id=obj.vm.cluster_id)
    elif label == "storage.StorageDomain":
        refs.update(object_type=ObjectType.STORAGE_DOMAIN, storage_domain_id=obj.pk, data_center_id=obj.data_center_id)
    elif label == "storage.Disk":
        refs.update(object_type=ObjectType.DISK, storage_domain_id=obj.storage_domain_id)
    elif label == "networking.LogicalNetwork":
        refs.update(object_type=ObjectType.NETWORK, data_center_id=obj.data_center_id)
    elif label == "networking.VnicProfile":
        refs.update(object_type=ObjectType.VNIC_PROFILE, data_center_id=obj.network.data_center_id)
    elif label == "networking.MacPool":
        refs.update(object_type=ObjectType.MAC_POOL)
    elif label == "networking.VmNic":
        refs.update(object_type=ObjectType.NIC, vm_id=obj.vm_id)
    elif label == "auth.User":
        refs.update(object_type=ObjectType.USER, object_id=None, object_name=obj.get_username())
    return refs


def _user_fields(user) -> dict:
    if user is None or not getattr(user, "is_authenticated", False):
        return {"user": None, "username": "system"}
    return {"user": user, "username": user.get_username()}


def record_event(
    code: str,
    message: str,
    *,
    user=None,
    obj: models.Model | None = None,
    severity: str = EventSeverity.NORMAL,
    correlation_id: str = "",
    **extra_refs,
) -> Event:
    refs = object_refs(obj)
    refs.update({k: v for k, v in extra_refs.items() if v is not None})
    event = Event.objects.create(
        code=code, message=message, severity=severity, correlation_id=correlation_id, **_user_fields(user), **refs
    )
    publish(EVENTS_GROUP, "event.created", event_payload(event))
    return event


# Payloads of the live streams: the REST serializers' output (EventSerializer,
# JobSerializer; a test holds them equal), built by hand because a DRF serializer costs
# milliseconds per object and a task publishes its Job at every step.
EVENT_FIELDS = (
    "id", "time", "severity", "code", "message", "user", "username", "correlation_id", "object_type", "object_id",
    "object_name", "data_center_id", "cluster_id", "host_id", "vm_id", "storage_domain_id",
)  # fmt: skip
JOB_FIELDS = (
    "id", "action_type", "description", "status", "is_active", "progress", "error", "owner", "correlation_id",
    "started_at", "updated_at", "ended_at", "object_type", "object_id", "object_name", "data_center_id",
    "cluster_id", "host_id", "vm_id", "storage_domain_id",
)  # fmt: skip
STEP_FIELDS = ("number", "description", "status", "progress", "started_at", "ended_at")
_RELATIONS = {"user": "user_id", "owner": "owner_id"}


def _json_value(value):
    if value is None or isinstance(value, (str, int, float, bool, list, dict)):
        return value
    if isinstance(value, datetime.datetime):
        text = timezone.localtime(value).isoformat() if timezone.is_aware(value) else value.isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text
    return str(value)


def _plain(obj, fields) -> dict:
    return {name: _json_value(getattr(obj, _RELATIONS.get(name, name))) for name in fields}


def plain_payload(obj: models.Model, fields) -> dict:
    """`fields` of `obj` as its REST serializer renders them (a relation as its id), without
    the serializer: the status payloads of the live streams (compute, inventory and storage
    services) are built this way, and tests hold them equal to the serializers' output."""
    attnames = _attnames(type(obj))
    return {name: _json_value(getattr(obj, attnames.get(name, name))) for name in fields}


@functools.cache
def _attnames(model: type[models.Model]) -> dict[str, str]:
    return {field.name: field.attname for field in model._meta.concrete_fields if field.is_relation}


def event_payload(event: Event) -> dict:
    return _plain(event, EVENT_FIELDS)


def job_payload(job: Job, steps=None) -> dict:
    payload = _plain(job, JOB_FIELDS)
    steps = job.steps.all() if steps is None else steps
    payload["steps"] = [_plain(step, STEP_FIELDS) for step in steps]
    return payload


def create_job(
    action_type: str, description: str, *, user=None, obj: models.Model | None = None, steps: Sequence[str] = ()
) -> Job:
    fields = _user_fields(user)
    job_id = uuid.uuid4()
    job = Job.objects.create(
        id=job_id,
        correlation_id=str(job_id),
        action_type=action_type,
        description=description,
        owner=fields["user"],
        **object_refs(obj),
    )
    # The Job is under way from now on (queued for a worker), and so is its first step: the
    # task need not spend a commit on saying so before it reaches the host.
    now = timezone.now()
    rows = Step.objects.bulk_create(
        [
            Step(job=job, number=number, description=text)
            if number > 1
            else Step(job=job, number=number, description=text, status=StepStatus.STARTED, started_at=now)
            for number, text in enumerate(steps, start=1)
        ]
    )
    publish(JOBS_GROUP, "job.updated", job_payload(job, rows))
    return job


class JobProgress:
    """Drives a Job from a Celery task: steps, progress and the end, each its own commit.

    The task runs outside any request transaction, so each call here commits at once and
    subscribers see progress as it happens.
    """

    def __init__(self, job_id):
        self.job_id = job_id
        self._total_steps = None

    def job(self) -> Job:
        return Job.objects.get(pk=self.job_id)

    def is_active(self) -> bool:
        return Job.objects.filter(pk=self.job_id, status=JobStatus.STARTED).exists()

    def _publish(self) -> None:
        publish(JOBS_GROUP, "job.updated", job_payload(self.job()))

    @transaction.atomic
    def step(self, number: int, *, progress: int | None = None) -> None:
        now = timezone.now()
        Step.objects.filter(job_id=self.job_id, number__lt=number, status=StepStatus.STARTED).update(
            status=StepStatus.FINISHED, progress=100, ended_at=now
        )
        Step.objects.filter(job_id=self.job_id, number=number).exclude(status=StepStatus.FINISHED).update(
            status=StepStatus.STARTED, started_at=now
        )
        if self._total_steps is None:
            self._total_steps = Step.objects.filter(job_id=self.job_id).count() or 1
        total = self._total_steps
        overall = progress if progress is not None else int((number - 1) * 100 / total)
        Job.objects.filter(pk=self.job_id, status=JobStatus.STARTED).update(
            progress=max(0, min(99, overall)), updated_at=now
        )
        self._publish()

    @transaction.atomic
    def finish(self) -> None:
        now = timezone.now()
        Step.objects.filter(job_id=self.job_id).exclude(status=StepStatus.FINISHED).update(
            status=StepStatus.FINISHED, progress=100, started_at=Coalesce("started_at", Value(now)), ended_at=now
        )
        Job.objects.filter(pk=self.job_id, status=JobStatus.STARTED).update(
            status=JobStatus.FINISHED, progress=100, ended_at=now, updated_at=now
        )
        self._publish()

    @transaction.atomic
    def fail(self, error: str, *, status: str = JobStatus.FAILED) -> None:
        now = timezone.now()
        Step.objects.filter(job_id=self.job_id, status__in=[StepStatus.STARTED, StepStatus.PENDING]).update(
            status=StepStatus.FAILED if status == JobStatus.FAILED else StepStatus.ABORTED, ended_at=now
        )
        Job.objects.filter(pk=self.job_id, status=JobStatus.STARTED).update(
            status=status, error=error[:5000], ended_at=now, updated_at=now, progress=F("progress")
        )
        self._publish()


CONTINUES = object()  # what `work` returns when it queued its next round: the Job goes on


def run_job(job_id, work) -> None:
    """Run `work(progress)` for a started Job; end it finished (unless `work` returns
    CONTINUES: it queued its next round), or failed with the reason.

    Idempotent: a Job that already ended (a redelivered task) is left alone. Errors that
    say why (AgentError, ValidationError, ConflictError) end the Job failed with their text;
    anything else also fails the Job, then propagates so the worker logs it.
    """
    from django.core.exceptions import ValidationError

    from hostagent.client import AgentError

    from .exceptions import ConflictError

    progress = JobProgress(job_id)
    if not progress.is_active():
        return
    try:
        outcome = work(progress)
    except (AgentError, ConflictError, ValidationError) as exc:
        progress.fail(_error_text(exc))
        return
    except Exception as exc:
        progress.fail(f"Internal error: {exc.__class__.__name__}: {exc}")
        raise
    if outcome is not CONTINUES:
        progress.finish()


def _error_text(exc: Exception) -> str:
    messages = getattr(exc, "messages", None)
    if messages:
        return "; ".join(messages)
    return getattr(exc, "message", None) or str(exc)
