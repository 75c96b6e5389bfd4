"""Routes of the compute API; olvm_site.api_urls gathers every app's router under /api/v1/."""

from rest_framework.routers import SimpleRouter

from . import views

router = SimpleRouter()
router.register("vms", views.VmViewSet, basename="vm")
router.register("templates", views.TemplateViewSet, basename="template")
router.register("instance-types", views.InstanceTypeViewSet, basename="instance-type")
router.register("snapshots", views.SnapshotViewSet, basename="snapshot")
router.register("affinity-groups", views.AffinityGroupViewSet, basename="affinity-group")

urlpatterns = router.urls
