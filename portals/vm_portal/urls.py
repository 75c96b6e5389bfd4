from django.urls import path

from portals.console_views import ConsoleView

from . import views

app_name = "vm_portal"

urlpatterns = [
    path("", views.VmListView.as_view(), name="vm-list"),
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", views.LogoutView.as_view(), name="logout"),
    path("vms/add/", views.VmCreateView.as_view(), name="vm-add"),
    path("vms/<uuid:pk>/", views.VmDetailView.as_view(), name="vm-detail"),
    path("vms/<uuid:pk>/snapshots/add/", views.SnapshotCreateView.as_view(), name="vm-snapshot-add"),
    path(
        "vms/<uuid:vm_pk>/snapshots/<uuid:pk>/<slug:action>/",
        views.SnapshotActionView.as_view(),
        name="vm-snapshot-action",
    ),
    path(
        "vms/<uuid:pk>/console/",
        ConsoleView.as_view(base_template="vm_portal/base.html", back_url_name="vm_portal:vm-detail", admin_only=False),
        name="vm-console",
    ),
    path("vms/<uuid:pk>/<slug:action>/", views.VmActionView.as_view(), name="vm-action"),
]
