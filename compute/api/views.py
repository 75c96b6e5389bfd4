"""Viewsets of the compute API: VMs (with their power actions), templates, instance types, snapshots."""

from urllib.parse import urlencode

from django.db.models import Prefetch
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.decorators import action
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response

from inventory.api.serializers import ConflictSerializer
from inventory.api.views import (
    ACTION_RESPONSES,
    NoUpdateMixin,
    ServiceModelViewSet,
    UserScopedMixin,
    created_with_job,
    history_action,
)
from inventory.choices import ActionGroup
from inventory.models import Host

from ..filtersets import (
    AffinityGroupFilterSet,
    InstanceTypeFilterSet,
    SnapshotFilterSet,
    TemplateFilterSet,
    VmFilterSet,
)
from ..models import AffinityGroup, InstanceType, Snapshot, Template, VirtualMachine
from .serializers import (
    AffinityGroupSerializer,
    ConsoleTicketRequestSerializer,
    ConsoleTicketSerializer,
    InstanceTypeSerializer,
    MigrateRequestSerializer,
    OwnVmSerializer,
    SnapshotSerializer,
    TemplateSerializer,
    VmSerializer,
)


class InstanceTypeViewSet(ServiceModelViewSet):
    queryset = InstanceType.objects.all()
    serializer_class = InstanceTypeSerializer
    filterset_class = InstanceTypeFilterSet
    search_fields = ("name", "description")
    ordering_fields = ("name", "memory_mib", "vcpus")

    def perform_remove(self, instance):
        from ..services import remove_instance_type

        return remove_instance_type(instance, user=self.request.user)


@created_with_job(TemplateSerializer)
class TemplateViewSet(ServiceModelViewSet):
    queryset = Template.objects.select_related("cluster")
    serializer_class = TemplateSerializer
    filterset_class = TemplateFilterSet
    search_fields = ("name", "description", "version_name")
    ordering_fields = ("name", "version_number", "created_at")
    create_returns_job = True

    def perform_remove(self, instance):
        from ..services import remove_template

        return remove_template(instance, user=self.request.user)


def vm_action(name: str, service_name: str, summary: str, url_path: str = ""):
    """A `POST /vms/{id}/<name>/` action calling `compute.services.<service_name>`: 202 with its Job."""

    def view(self, request, pk=None):
        from .. import services

        return self.job_response(getattr(services, service_name)(self.get_object(), user=request.user))

    view.__name__ = name
    view.__doc__ = summary
    view = action(detail=True, methods=["post"], url_path=url_path or name, url_name=name)(view)
    return extend_schema(request=None, responses=ACTION_RESPONSES, summary=summary)(view)


REMOVE_DISKS = OpenApiParameter(
    "remove_disks", OpenApiTypes.BOOL, description="Also remove the VM's disks (default true)."
)


@created_with_job(VmSerializer)
class VmViewSet(UserScopedMixin, ServiceModelViewSet):
    """VMs. Users who are not administrators see only the VMs they own or were granted
    (another user's VM is a 404), act on them as their roles allow (a 403 says why), and
    create VMs of their own from the templates they may use, within their quota (OwnVmSerializer)."""

    queryset = VirtualMachine.objects.select_related(
        "cluster", "data_center", "template", "instance_type", "run_on_host", "owner"
    ).prefetch_related("pinned_hosts")
    serializer_class = VmSerializer
    filterset_class = VmFilterSet
    search_fields = ("name", "description", "comment", "guest_hostname")
    ordering_fields = ("name", "status", "memory_mib", "vcpus", "created_at", "status_changed_at")
    create_returns_job = True
    user_actions = {
        "update": ActionGroup.VM_EDIT,
        "partial_update": ActionGroup.VM_EDIT,
        "destroy": ActionGroup.VM_REMOVE,
        **dict.fromkeys(("start", "shutdown", "stop", "reboot", "suspend", "resume"), ActionGroup.VM_OPERATE),
        "console": ActionGroup.VM_CONSOLE,
        "history": ActionGroup.VM_VIEW,
    }

    def scope(self, queryset):
        from inventory.permissions import visible_vms

        return visible_vms(self.request.user, queryset=queryset)

    def get_serializer_class(self):
        if getattr(self, "swagger_fake_view", False) or self.is_administrator():
            return VmSerializer
        return OwnVmSerializer

    @extend_schema(parameters=[REMOVE_DISKS])
    def destroy(self, request, *args, **kwargs):
        return super().destroy(request, *args, **kwargs)

    def perform_remove(self, instance):
        from ..services import remove_vm

        keep = self.request.query_params.get("remove_disks", "true").strip().lower() in {"false", "0", "no", "off"}
        return remove_vm(instance, user=self.request.user, remove_disks=not keep)

    start = vm_action("start", "start_vm", "Start (run) a VM")
    shutdown = vm_action("shutdown", "shutdown_vm", "Shut a VM down through its guest")
    stop = vm_action("stop", "stop_vm", "Power a VM off")
    reboot = vm_action("reboot", "reboot_vm", "Reboot a VM")
    suspend = vm_action("suspend", "suspend_vm", "Suspend a VM to disk")
    resume = vm_action("resume", "resume_vm", "Resume a paused or suspended VM")
    history = history_action("vm", "Monitoring history of a VM: CPU, memory, network")

    @extend_schema(
        request=MigrateRequestSerializer,
        responses=ACTION_RESPONSES,
        summary="Live-migrate a running VM (to `host`, or where the scheduler places it)",
    )
    @action(detail=True, methods=["post"])
    def migrate(self, request, pk=None):
        """409 with `details.rejected` (each host and the filter that removed it) when no host fits."""
        from ..services import migrate_vm

        body = MigrateRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        job = migrate_vm(self.get_object(), user=request.user, target_host=body.validated_data.get("host"))
        return self.job_response(job)

    cancel_migration = vm_action(
        "cancel_migration", "cancel_migration", "Cancel a VM's running migration", url_path="cancel-migration"
    )

    @extend_schema(
        request=ConsoleTicketRequestSerializer,
        responses={200: ConsoleTicketSerializer, 409: ConflictSerializer},
        summary="Open a one-time console ticket (serial or VNC) of a running VM",
    )
    @action(detail=True, methods=["post"], permission_classes=[IsAuthenticated])
    def console(self, request, pk=None):
        """Not only for administrators: `compute.services.may_open_console` decides."""
        from ..services import console_ticket

        body = ConsoleTicketRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        vm = self.get_object()
        ticket = console_ticket(vm, user=request.user, kind=body.validated_data["kind"])
        scheme = "wss" if request.is_secure() else "ws"
        path = f"/ws/console/{vm.pk}/?{urlencode({'ticket': ticket['ticket']})}"
        return Response({**ticket, "url": f"{scheme}://{request.get_host()}{path}"})


@created_with_job(SnapshotSerializer)
class SnapshotViewSet(UserScopedMixin, NoUpdateMixin, ServiceModelViewSet):
    """Snapshots. Users who are not administrators see the snapshots of the VMs they see, and
    create, revert and remove them with `vm.snapshot` on the VM."""

    queryset = Snapshot.objects.select_related("vm")
    serializer_class = SnapshotSerializer
    filterset_class = SnapshotFilterSet
    search_fields = ("description",)
    ordering_fields = ("created_at", "description")
    create_returns_job = True
    user_actions = {"destroy": ActionGroup.VM_SNAPSHOT, "revert": ActionGroup.VM_SNAPSHOT}

    def scope(self, queryset):
        from inventory.permissions import visible_vms

        return queryset.filter(vm__in=visible_vms(self.request.user).values("pk"))

    def permission_target(self, obj):
        return obj.vm

    def check_create(self, serializer) -> None:
        from inventory.permissions import check

        check(self.request.user, ActionGroup.VM_SNAPSHOT, serializer.validated_data["vm"])

    def perform_remove(self, instance):
        from ..services import remove_snapshot

        return remove_snapshot(instance, user=self.request.user)

    @extend_schema(request=None, responses=ACTION_RESPONSES, summary="Revert the VM to this snapshot")
    @action(detail=True, methods=["post"])
    def revert(self, request, pk=None):
        from ..services import revert_snapshot

        return self.job_response(revert_snapshot(self.get_object(), user=request.user))


class AffinityGroupViewSet(ServiceModelViewSet):
    """Affinity groups of the clusters (administrators only); `?cluster=`, `?vm=`, `?host=` filter them."""

    queryset = AffinityGroup.objects.select_related("cluster").prefetch_related(
        Prefetch("vms", queryset=VirtualMachine.objects.only("id", "name")),
        Prefetch("hosts", queryset=Host.objects.only("id", "name")),
    )
    serializer_class = AffinityGroupSerializer
    filterset_class = AffinityGroupFilterSet
    search_fields = ("name", "description")
    ordering_fields = ("name", "priority", "created_at")

    def perform_remove(self, instance):
        from ..services import remove_affinity_group

        return remove_affinity_group(instance, user=self.request.user)
