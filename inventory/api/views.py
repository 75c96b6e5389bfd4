"""Viewsets of the inventory API, and the base every app's viewsets build on.

Writes go through the services: create/update through the serializer (which calls
`create_*` / `update_*`), delete through `perform_remove` (which calls `remove_*`), actions
straight to the service. A service's ConflictError becomes a 409 with its reason
(inventory.api.exceptions).
"""

import re
from functools import cache

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db import models
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.response import Response

from ..filtersets import (
    ClusterFilterSet,
    DataCenterFilterSet,
    EventFilterSet,
    HostFilterSet,
    JobFilterSet,
    PermissionFilterSet,
    QuotaFilterSet,
    RoleFilterSet,
)
from ..models import Cluster, DataCenter, Event, Host, Job, Permission, Quota, Role
from .permissions import IsAdministratorOrUser
from .serializers import (
    ClusterSerializer,
    ConflictSerializer,
    DataCenterSerializer,
    EventSerializer,
    HistoryQuerySerializer,
    HistorySerializer,
    HostHistoryQuerySerializer,
    HostSerializer,
    JobSerializer,
    PermissionSerializer,
    QuotaSerializer,
    RoleSerializer,
    UserSerializer,
)

# Base -------------------------------------------------------------------------------------


class ResourceSchema(AutoSchema):
    """Tags each operation with its resource (`vms`, `hosts`) rather than the `v1` of the path."""

    def get_tags(self) -> list[str]:
        match = re.match(r"^/api/v\d+/([^/{]+)", self.path)
        return [match.group(1)] if match else super().get_tags()


@cache
def with_job(serializer_class: type[serializers.ModelSerializer]) -> type[serializers.ModelSerializer]:
    """The create response of an object whose creation starts a Job: the object plus `job`."""
    meta = type("Meta", (serializer_class.Meta,), {"fields": (*serializer_class.Meta.fields, "job")})
    name = serializer_class.__name__.removesuffix("Serializer") + "CreatedSerializer"
    job = serializers.UUIDField(read_only=True, allow_null=True, help_text="The Job doing the work, if any.")
    return type(name, (serializer_class,), {"Meta": meta, "job": job, "__module__": serializer_class.__module__})


def created_with_job(serializer_class, *, updates: bool = False):
    """Class decorator documenting that create (and with `updates` also update) answers the
    object plus its `job` id."""
    views = {"create": extend_schema(responses={201: with_job(serializer_class)})}
    if updates:
        views["update"] = views["partial_update"] = extend_schema(responses={200: with_job(serializer_class)})
    return extend_schema_view(**views)


ACTION_RESPONSES = {202: JobSerializer, 409: ConflictSerializer}


def history_action(kind: str, summary: str):
    """`GET /<objects>/{id}/history/`: a monitoring series of the object (inventory.history)."""
    from ..history import METRICS

    query_class = HostHistoryQuerySerializer if kind == "host" else HistoryQuerySerializer
    context = {"metrics": METRICS[kind][2], "nic_metrics": METRICS["host_nic"][2]}

    def history(self, request, pk=None):
        from django.utils import timezone

        from ..history import RAW_KEEP, series

        query = query_class(data=request.query_params, context=context)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        obj = self.get_object()
        nic = params.get("nic")
        since = params.get("since") or timezone.now() - RAW_KEEP
        data = series(
            "host_nic" if nic else kind, obj.pk, params["metrics"], since=since, until=params.get("until"), nic=nic
        )
        return Response(data)

    history.__doc__ = summary
    view = action(detail=True, methods=["get"], url_path="history", url_name="history")(history)
    return extend_schema(parameters=[query_class], responses={200: HistorySerializer}, summary=summary)(view)


class Pagination(LimitOffsetPagination):
    """LimitOffset (50 a page) with a ceiling: an unbounded ?limit= reached PostgreSQL as a
    LIMIT beyond bigint (a 500), and no client needs more than a thousand rows a page."""

    max_limit = 1000


class ServiceModelViewSet(viewsets.ModelViewSet):
    """CRUD over one model whose every write is a service call.

    - create: 201 with the object as re-read through `queryset`; with `create_returns_job`
      the body also carries `job` (the id of the Job the service opened, or null);
    - update: 200 with the object as re-read; with `update_returns_job` plus `job` (a
      change of a running VM's device is a hot-plug Job);
    - destroy: `perform_remove()` calls the remove service; 204, or 202 with the Job when
      removing is long work.
    """

    schema = ResourceSchema()
    pagination_class = Pagination
    create_returns_job = False
    update_returns_job = False

    def perform_remove(self, instance: models.Model) -> Job | None:  # pragma: no cover
        raise NotImplementedError(f"{type(self).__name__} must remove through a service function.")

    def filter_queryset(self, queryset):
        # Filters, search and ordering choose the rows of a list; an object named by the id
        # in its URL is found (or is a 404) whatever the query string says, without them.
        if self.detail:
            return queryset
        return super().filter_queryset(queryset)

    def reread(self, obj: models.Model) -> models.Model:
        """The object fetched again with the viewset's select/prefetch, as a list row shows it."""
        return self.get_queryset().filter(pk=obj.pk).first() or obj

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        self.perform_create(serializer)
        return Response(self.saved_body(serializer, self.create_returns_job), status=status.HTTP_201_CREATED)

    def update(self, request, *args, **kwargs):
        partial = kwargs.pop("partial", False)
        serializer = self.get_serializer(self.get_object(), data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        serializer.save()
        return Response(self.saved_body(serializer, self.update_returns_job))

    def saved_body(self, serializer, with_job_id: bool) -> dict:
        data = dict(self.get_serializer(self.reread(serializer.instance)).data)
        if with_job_id:
            data["job"] = str(serializer.job.pk) if serializer.job is not None else None
        return data

    @extend_schema(responses={204: None, 202: JobSerializer, 409: ConflictSerializer})
    def destroy(self, request, *args, **kwargs):
        job = self.perform_remove(self.get_object())
        if job is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return self.job_response(job)

    def job_response(self, job: Job) -> Response:
        """202 Accepted with the Job that carries out the action."""
        job = Job.objects.prefetch_related("steps").get(pk=job.pk)
        return Response(JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class UserScopedMixin:
    """A viewset that users who are not administrators may use too, within their object
    permissions (inventory.permissions); administrators (staff) keep the whole admin API.

    For any other active user:
    - list and detail show only the rows `scope()` keeps: another user's object is a 404,
      as if it did not exist (its existence is not told either);
    - every other action needs the action group `user_actions[action]` on the object
      (`permission_target()`: e.g. a snapshot's VM), checked in `get_object()`: a refusal is
      a 403 saying why; an action not listed there is for administrators only;
    - `perform_create()` may check the new object's parents (`check_create()`).
    """

    permission_classes = [IsAdministratorOrUser]
    user_actions: dict[str, str] = {}
    _open_actions = frozenset({"list", "retrieve", "create", "metadata"})

    def is_administrator(self) -> bool:
        return bool(self.request.user.is_staff)

    def scope(self, queryset):  # pragma: no cover - each viewset says what a user sees
        raise NotImplementedError

    def permission_target(self, obj):
        return obj

    def check_create(self, serializer) -> None:
        """Raise PermissionDenied when the user may not create this object (validated data)."""

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        if not self.is_administrator() and self.action not in self._open_actions | set(self.user_actions):
            raise PermissionDenied("Administrator rights are needed for this operation.")

    def get_queryset(self):
        queryset = super().get_queryset()
        if getattr(self, "swagger_fake_view", False) or self.is_administrator():
            return queryset
        return self.scope(queryset)

    def get_object(self):
        obj = super().get_object()
        action_group = self.user_actions.get(self.action)
        if action_group and not self.is_administrator():
            from ..permissions import check

            check(self.request.user, action_group, self.permission_target(obj))
        return obj

    def perform_create(self, serializer) -> None:
        if not self.is_administrator():
            self.check_create(serializer)
        serializer.save()


class NoUpdateMixin:
    """For objects that have no update service: create, read and delete only."""

    http_method_names = ["get", "post", "delete", "head", "options"]


# Data centers, clusters, hosts -----------------------------------------------------------


class DataCenterViewSet(ServiceModelViewSet):
    queryset = DataCenter.objects.all()
    serializer_class = DataCenterSerializer
    filterset_class = DataCenterFilterSet
    search_fields = ("name", "description")
    ordering_fields = ("name", "status", "compatibility_version", "created_at")

    def perform_remove(self, instance):
        from ..services import remove_data_center

        return remove_data_center(instance, user=self.request.user)


class ClusterViewSet(ServiceModelViewSet):
    queryset = Cluster.objects.select_related("data_center", "mac_pool")
    serializer_class = ClusterSerializer
    filterset_class = ClusterFilterSet
    search_fields = ("name", "description")
    ordering_fields = ("name", "cpu_type", "created_at")

    def perform_remove(self, instance):
        from ..services import remove_cluster

        return remove_cluster(instance, user=self.request.user)


@created_with_job(HostSerializer)
class HostViewSet(ServiceModelViewSet):
    queryset = Host.objects.select_related("cluster")
    serializer_class = HostSerializer
    filterset_class = HostFilterSet
    search_fields = ("name", "description", "address")
    ordering_fields = ("name", "status", "address", "memory_mib", "created_at")
    create_returns_job = True

    def perform_remove(self, instance):
        from ..services import remove_host

        return remove_host(instance, user=self.request.user)

    @extend_schema(request=None, responses=ACTION_RESPONSES, summary="Activate a host (leave maintenance)")
    @action(detail=True, methods=["post"])
    def activate(self, request, pk=None):
        from ..services import activate_host

        return self.job_response(activate_host(self.get_object(), user=request.user))

    @extend_schema(request=None, responses=ACTION_RESPONSES, summary="Move a host to maintenance")
    @action(detail=True, methods=["post"])
    def deactivate(self, request, pk=None):
        from ..services import deactivate_host

        return self.job_response(deactivate_host(self.get_object(), user=request.user))

    @extend_schema(request=None, responses=ACTION_RESPONSES, summary="Reinstall a host (deploy its agent again)")
    @action(detail=True, methods=["post"])
    def reinstall(self, request, pk=None):
        from ..services import reinstall_host

        return self.job_response(reinstall_host(self.get_object(), user=request.user))

    history = history_action("host", "Monitoring history of a host: CPU, memory, network")


# Audit and users --------------------------------------------------------------------------


class EventViewSet(viewsets.ReadOnlyModelViewSet):
    """The audit log, newest first."""

    schema = ResourceSchema()
    pagination_class = Pagination
    queryset = Event.objects.all()
    serializer_class = EventSerializer
    filterset_class = EventFilterSet
    search_fields = ("message", "code", "object_name", "username")
    ordering_fields = ("time", "severity", "code")


class JobViewSet(viewsets.ReadOnlyModelViewSet):
    """Long-running operations with their steps, newest first."""

    schema = ResourceSchema()
    pagination_class = Pagination
    queryset = Job.objects.prefetch_related("steps")
    serializer_class = JobSerializer
    filterset_class = JobFilterSet
    search_fields = ("description", "action_type", "object_name")
    ordering_fields = ("started_at", "ended_at", "status", "action_type")


class UserViewSet(viewsets.ReadOnlyModelViewSet):
    """The engine's users (read-only; accounts are managed in the admin)."""

    schema = ResourceSchema()
    pagination_class = Pagination
    queryset = get_user_model().objects.order_by("username")
    serializer_class = UserSerializer
    filterset_fields = ("is_staff", "is_active")
    search_fields = ("username", "first_name", "last_name", "email")
    ordering_fields = ("username", "date_joined", "last_login")


# Roles, permissions, quotas ---------------------------------------------------------------


class RoleViewSet(viewsets.ReadOnlyModelViewSet):
    """oVirt's predefined roles: sets of action groups (read-only; seeded by a migration)."""

    schema = ResourceSchema()
    pagination_class = Pagination
    queryset = Role.objects.prefetch_related("actions")
    serializer_class = RoleSerializer
    filterset_class = RoleFilterSet
    search_fields = ("name", "description")
    ordering_fields = ("name", "administrative")


class PermissionViewSet(NoUpdateMixin, ServiceModelViewSet):
    """Grants of roles to users and groups on the system, data centers, clusters, VMs and
    templates; each holds on everything below its object. Created and removed, never changed."""

    serializer_class = PermissionSerializer
    filterset_class = PermissionFilterSet
    ordering_fields = ("created_at", "object_type")

    def get_queryset(self):
        from ..permissions import with_object_names

        return with_object_names(Permission.objects.select_related("user", "group", "role"))

    def perform_remove(self, instance):
        from ..services import revoke_permission

        return revoke_permission(instance, user=self.request.user)


class QuotaViewSet(ServiceModelViewSet):
    """Limits on what the VMs a user owns add up to: vCPUs, memory, disk (empty: unlimited)."""

    queryset = Quota.objects.select_related("user", "group")
    serializer_class = QuotaSerializer
    filterset_class = QuotaFilterSet
    ordering_fields = ("created_at",)

    def perform_remove(self, instance):
        from ..services import remove_quota

        return remove_quota(instance, user=self.request.user)
