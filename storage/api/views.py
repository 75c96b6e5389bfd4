"""Viewsets of the storage API: storage domains, disks, disk attachments."""

from inventory.api.views import ServiceModelViewSet, created_with_job, history_action

from ..filtersets import DiskAttachmentFilterSet, DiskFilterSet, StorageDomainFilterSet
from ..models import Disk, DiskAttachment, StorageDomain
from .serializers import DiskAttachmentSerializer, DiskSerializer, StorageDomainSerializer


@created_with_job(StorageDomainSerializer)
class StorageDomainViewSet(ServiceModelViewSet):
    queryset = StorageDomain.objects.select_related("data_center")
    serializer_class = StorageDomainSerializer
    filterset_class = StorageDomainFilterSet
    search_fields = ("name", "description", "path")
    ordering_fields = ("name", "status", "type", "free_bytes", "total_bytes", "created_at")
    create_returns_job = True

    def perform_remove(self, instance):
        from ..services import remove_storage_domain

        return remove_storage_domain(instance, user=self.request.user)

    history = history_action("storage_domain", "Monitoring history of a storage domain: total and free bytes")


@created_with_job(DiskSerializer)
class DiskViewSet(ServiceModelViewSet):
    queryset = Disk.objects.select_related("storage_domain")
    serializer_class = DiskSerializer
    filterset_class = DiskFilterSet
    search_fields = ("alias", "description")
    ordering_fields = ("alias", "provisioned_size", "actual_size", "status", "created_at")
    create_returns_job = True

    def perform_remove(self, instance):
        from ..services import remove_disk

        return remove_disk(instance, user=self.request.user)


@created_with_job(DiskAttachmentSerializer, updates=True)
class DiskAttachmentViewSet(ServiceModelViewSet):
    queryset = DiskAttachment.objects.select_related("vm", "disk")
    serializer_class = DiskAttachmentSerializer
    filterset_class = DiskAttachmentFilterSet
    ordering_fields = ("created_at", "bootable")
    create_returns_job = True
    update_returns_job = True

    def perform_remove(self, instance):
        from ..services import detach_disk

        return detach_disk(instance, user=self.request.user)
