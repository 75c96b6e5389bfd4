"""Routes of the networking API; olvm_site.api_urls gathers every app's router under /api/v1/."""

from rest_framework.routers import SimpleRouter

from . import views

router = SimpleRouter()
router.register("networks", views.NetworkViewSet, basename="network")
router.register("cluster-networks", views.ClusterNetworkViewSet, basename="cluster-network")
router.register("vnic-profiles", views.VnicProfileViewSet, basename="vnic-profile")
router.register("mac-pools", views.MacPoolViewSet, basename="mac-pool")
router.register("nics", views.NicViewSet, basename="nic")

urlpatterns = router.urls
