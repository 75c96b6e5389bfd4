"""Every app's API routes under /api/v1/ (namespace `api`), with one browsable API root."""

from django.urls import path
from drf_spectacular.utils import extend_schema
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.routers import DefaultRouter

from compute.api.urls import router as compute_router
from inventory.api.urls import router as inventory_router
from networking.api.urls import router as networking_router
from storage.api.urls import router as storage_router

app_name = "api"


class ObtainTokenView(ObtainAuthToken):
    """POST username and password; answers the user's API token (`Authorization: Token <key>`)."""

    @extend_schema(operation_id="auth_token_create", tags=["auth"], summary="Obtain an API token")
    def post(self, request, *args, **kwargs):
        return super().post(request, *args, **kwargs)


router = DefaultRouter()
for app_router in (inventory_router, compute_router, storage_router, networking_router):
    router.registry.extend(app_router.registry)

urlpatterns = [
    path("auth/token/", ObtainTokenView.as_view(), name="auth-token"),
    *router.urls,
]
