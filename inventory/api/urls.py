"""Routes of the inventory API; olvm_site.api_urls gathers every app's router under /api/v1/."""

from rest_framework.routers import SimpleRouter

from . import views

router = SimpleRouter()
router.register("data-centers", views.DataCenterViewSet, basename="data-center")
router.register("clusters", views.ClusterViewSet, basename="cluster")
router.register("hosts", views.HostViewSet, basename="host")
router.register("events", views.EventViewSet, basename="event")
router.register("jobs", views.JobViewSet, basename="job")
router.register("users", views.UserViewSet, basename="user")
router.register("roles", views.RoleViewSet, basename="role")
router.register("permissions", views.PermissionViewSet, basename="permission")
router.register("quotas", views.QuotaViewSet, basename="quota")

urlpatterns = router.urls
