from django.contrib.auth import views as auth_views
from django.urls import path

from . import views
from .console_views import ConsoleView

app_name = "portals"


def crud(prefix: str, name: str, list_view, detail_view, edit_view, remove_view) -> list:
    """The five routes of one object type: list, add, detail, edit, remove."""
    return [
        path(f"{prefix}/", list_view.as_view(), name=f"{name}-list"),
        path(f"{prefix}/add/", edit_view.as_view(), name=f"{name}-add"),
        path(f"{prefix}/<uuid:pk>/", detail_view.as_view(), name=f"{name}-detail"),
        path(f"{prefix}/<uuid:pk>/edit/", edit_view.as_view(), name=f"{name}-edit"),
        path(f"{prefix}/<uuid:pk>/remove/", remove_view.as_view(), name=f"{name}-remove"),
    ]


urlpatterns = [
    path("", views.DashboardView.as_view(), name="dashboard"),
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    *crud(
        "data-centers",
        "datacenter",
        views.DataCenterListView,
        views.DataCenterDetailView,
        views.DataCenterEditView,
        views.DataCenterRemoveView,
    ),
    *crud(
        "clusters",
        "cluster",
        views.ClusterListView,
        views.ClusterDetailView,
        views.ClusterEditView,
        views.ClusterRemoveView,
    ),
    path(
        "clusters/<uuid:cluster_pk>/affinity-groups/add/",
        views.AffinityGroupEditView.as_view(),
        name="cluster-affinity-group-add",
    ),
    path(
        "clusters/<uuid:cluster_pk>/affinity-groups/<uuid:pk>/edit/",
        views.AffinityGroupEditView.as_view(),
        name="cluster-affinity-group-edit",
    ),
    path(
        "clusters/<uuid:cluster_pk>/affinity-groups/<uuid:pk>/remove/",
        views.AffinityGroupRemoveView.as_view(),
        name="cluster-affinity-group-remove",
    ),
    *crud("hosts", "host", views.HostListView, views.HostDetailView, views.HostEditView, views.HostRemoveView),
    path("hosts/<uuid:pk>/<slug:action>/", views.HostActionView.as_view(), name="host-action"),
    *crud("vms", "vm", views.VmListView, views.VmDetailView, views.VmEditView, views.VmRemoveView),
    path("vms/<uuid:pk>/snapshots/add/", views.SnapshotCreateView.as_view(), name="vm-snapshot-add"),
    path(
        "vms/<uuid:vm_pk>/snapshots/<uuid:pk>/<slug:action>/",
        views.VmSnapshotActionView.as_view(),
        name="vm-snapshot-action",
    ),
    path("vms/<uuid:vm_pk>/nics/add/", views.VmNicEditView.as_view(), name="vm-nic-add"),
    path("vms/<uuid:vm_pk>/nics/<uuid:pk>/edit/", views.VmNicEditView.as_view(), name="vm-nic-edit"),
    path("vms/<uuid:vm_pk>/nics/<uuid:pk>/<slug:action>/", views.VmNicActionView.as_view(), name="vm-nic-action"),
    path("vms/<uuid:vm_pk>/disks/<uuid:pk>/<slug:action>/", views.VmDiskActionView.as_view(), name="vm-disk-action"),
    path("vms/<uuid:pk>/console/", ConsoleView.as_view(), name="vm-console"),
    path("vms/<uuid:pk>/migrate/", views.VmMigrateView.as_view(), name="vm-migrate"),
    path("vms/<uuid:pk>/<slug:action>/", views.VmActionView.as_view(), name="vm-action"),
    *crud(
        "templates",
        "template",
        views.TemplateListView,
        views.TemplateDetailView,
        views.TemplateEditView,
        views.TemplateRemoveView,
    ),
    *crud(
        "networks",
        "network",
        views.NetworkListView,
        views.NetworkDetailView,
        views.NetworkEditView,
        views.NetworkRemoveView,
    ),
    *crud(
        "vnic-profiles",
        "vnicprofile",
        views.VnicProfileListView,
        views.VnicProfileDetailView,
        views.VnicProfileEditView,
        views.VnicProfileRemoveView,
    ),
    *crud(
        "storage-domains",
        "storagedomain",
        views.StorageDomainListView,
        views.StorageDomainDetailView,
        views.StorageDomainEditView,
        views.StorageDomainRemoveView,
    ),
    *crud("disks", "disk", views.DiskListView, views.DiskDetailView, views.DiskEditView, views.DiskRemoveView),
    path("users/", views.UserListView.as_view(), name="user-list"),
    path("permissions/", views.SystemPermissionListView.as_view(), name="permission-list"),
    path("permissions/add/", views.PermissionAddView.as_view(), name="permission-add"),
    path("permissions/<uuid:pk>/remove/", views.PermissionRemoveView.as_view(), name="permission-remove"),
    path("events/", views.EventListView.as_view(), name="event-list"),
    path("jobs/", views.JobListView.as_view(), name="job-list"),
    path("jobs/<uuid:pk>/", views.JobDetailView.as_view(), name="job-detail"),
    path("tree/clusters/<uuid:pk>/", views.TreeClusterView.as_view(), name="tree-cluster"),
    path("tree/hosts/<uuid:pk>/", views.TreeHostView.as_view(), name="tree-host"),
    path("pane/events/", views.PaneEventsView.as_view(), name="pane-events"),
]
