from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

urlpatterns = [
    path("django-admin/", admin.site.urls),
    path("api/v1/", include("olvm_site.api_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("vm-portal/", include("portals.vm_portal.urls")),
    path("", include("portals.urls")),
]
# Both portals answer a refusal with templates/403.html, in the VM portal's colours there.
handler403 = "portals.views.permission_denied"
