"""Viewsets of the compute API: VMs (with their power actions), templates, instance types, snapshots."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.decorators import action

from inventory.api.views import ACTION_RESPONSES, NoUpdateMixin, ServiceModelViewSet, created_with_job

from ..filtersets import InstanceTypeFilterSet, SnapshotFilterSet, TemplateFilterSet, VmFilterSet
from ..models import InstanceType, Snapshot, Template, VirtualMachine
from .serializers import InstanceTypeSerializer, SnapshotSerializer, TemplateSerializer, VmSerializer


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


def vm_action(name: str, service_name: str, summary: str):
    """A `POST /vms/{id}/<name>/` action calling `compute.services.<service_name>`: 202 with its Job."""

    def view(self, request, pk=None):
        from .. import services

        return self.job_response(getattr(services, service_name)(self.get_object(), user=request.user))

    view.__name__ = name
    view.__doc__ = summary
    view = action(detail=True, methods=["post"], url_path=name, url_name=name)(view)
    return extend_schema(request=None, responses=ACTION_RESPONSES, summary=summary)(view)


REMOVE_DISKS = OpenApiParameter(
    "remove_disks", OpenApiTypes.BOOL, description="Also remove the VM's disks (default true)."
)


@created_with_job(VmSerializer)
class VmViewSet(ServiceModelViewSet):
    queryset = VirtualMachine.objects.select_related(
        "cluster", "data_center", "template", "instance_type", "run_on_host"
    ).prefetch_related("pinned_hosts")
    serializer_class = VmSerializer
    filterset_class = VmFilterSet
    search_fields = ("name", "description", "comment", "guest_hostname")
    ordering_fields = ("name", "status", "memory_mib", "vcpus", "created_at", "status_changed_at")
    create_returns_job = True

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


@created_with_job(SnapshotSerializer)
class SnapshotViewSet(NoUpdateMixin, ServiceModelViewSet):
    queryset = Snapshot.objects.select_related("vm")
    serializer_class = SnapshotSerializer
    filterset_class = SnapshotFilterSet
    search_fields = ("description",)
    ordering_fields = ("created_at", "description")
    create_returns_job = True

    def perform_remove(self, instance):
        from ..services import remove_snapshot

        return remove_snapshot(instance, user=self.request.user)

    @extend_schema(request=None, responses=ACTION_RESPONSES, summary="Revert the VM to this snapshot")
    @action(detail=True, methods=["post"])
    def revert(self, request, pk=None):
        from ..services import revert_snapshot

        return self.job_response(revert_snapshot(self.get_object(), user=request.user))
