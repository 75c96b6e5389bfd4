import uuid

from django.conf import settings
from django.db import models
from django.urls import reverse

from ..choices import EventSeverity, JobStatus, ObjectType, StepStatus


class ObjectRefs(models.Model):
    """The objects an Event or Job concerns: ids, not foreign keys, so history outlives them."""

    object_type = models.CharField(max_length=24, choices=ObjectType.choices, default=ObjectType.SYSTEM)
    object_id = models.UUIDField(null=True, blank=True, db_index=True)
    object_name = models.CharField(max_length=255, blank=True)
    data_center_id = models.UUIDField(null=True, blank=True, db_index=True)
    cluster_id = models.UUIDField(null=True, blank=True, db_index=True)
    host_id = models.UUIDField(null=True, blank=True, db_index=True)
    vm_id = models.UUIDField(null=True, blank=True, db_index=True)
    storage_domain_id = models.UUIDField(null=True, blank=True, db_index=True)

    class Meta:
        abstract = True


class Event(ObjectRefs):
    """The audit log: one row per action or observed change."""

    id = models.BigAutoField(primary_key=True)
    time = models.DateTimeField(auto_now_add=True, db_index=True)
    severity = models.CharField(max_length=8, choices=EventSeverity.choices, default=EventSeverity.NORMAL)
    code = models.CharField(max_length=64, db_index=True, help_text="What happened, e.g. USER_STARTED_VM.")
    message = models.TextField()
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    username = models.CharField(max_length=150, blank=True)
    correlation_id = models.CharField(max_length=64, blank=True, db_index=True)

    class Meta:
        ordering = ["-time", "-id"]
        indexes = [models.Index(fields=["severity", "-time"], name="event_severity_time")]

    def __str__(self) -> str:
        return f"{self.time:%Y-%m-%d %H:%M:%S} {self.severity} {self.code}"


class Job(ObjectRefs):
    """A long-running operation, like oVirt's job: steps, progress, outcome."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    action_type = models.CharField(max_length=64, db_index=True, help_text="e.g. RunVm, AddVds.")
    description = models.CharField(max_length=500)
    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.STARTED, db_index=True)
    progress = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    correlation_id = models.CharField(max_length=64, blank=True, db_index=True)
    started_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return self.description

    @property
    def is_active(self) -> bool:
        return self.status == JobStatus.STARTED

    def get_absolute_url(self) -> str:
        return reverse("portals:job-detail", args=[self.pk])


class Step(models.Model):
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="steps")
    number = models.PositiveSmallIntegerField()
    description = models.CharField(max_length=500)
    status = models.CharField(max_length=16, choices=StepStatus.choices, default=StepStatus.PENDING)
    progress = models.PositiveSmallIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["job", "number"]
        constraints = [models.UniqueConstraint(fields=["job", "number"], name="step_number_unique")]

    def __str__(self) -> str:
        return f"{self.number}. {self.description}"
