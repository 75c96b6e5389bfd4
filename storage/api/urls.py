"""Routes of the storage API; olvm_site.api_urls gathers every app's router under /api/v1/."""

from rest_framework.routers import SimpleRouter

from . import views

router = SimpleRouter()
router.register("storage-domains", views.StorageDomainViewSet, basename="storage-domain")
router.register("disks", views.DiskViewSet, basename="disk")
router.register("disk-attachments", views.DiskAttachmentViewSet, basename="disk-attachment")

urlpatterns = router.urls
