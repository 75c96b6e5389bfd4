"""Create / edit forms of the administration portal.

They are ModelForms for one reason: their `is_valid()` runs the model's own validation
(`full_clean()` on the instance the form builds), so a field error shows next to the
field before anything is sent. They never write: `save()` is refused, and the view calls
the service with `service_kwargs()` (create) or `service_changes()` (edit), then hands
the service's ValidationError back to the form with `add_service_errors()`.

A form in edit mode (bound to an existing instance) drops the fields listed in
`create_only`; the service decides what really may change.
"""

from decimal import Decimal

from django import forms
from django.core.exceptions import ValidationError
from django.db.models import Q

from compute.models import BLANK_TEMPLATE_ID, AffinityGroup, Template, VirtualMachine
from compute.services import LIVE_FIELDS, SHAPE_FIELDS
from compute.statemachine import RUNNING
from inventory.choices import PermissionObjectType
from inventory.models import Cluster, DataCenter, Host, Role
from networking.models import ClusterNetwork, LogicalNetwork, MacPool, VmNic, VnicProfile
from storage.choices import DiskInterface, StorageDomainRole
from storage.models import GIB, Disk, StorageDomain

FROM_TEMPLATE = "From the template"
BOOT_OPTION_FIELDS = ("kernel_path", "initrd_path", "kernel_params")
BOOT_OPTION_LABELS = {"kernel_path": "Kernel path", "initrd_path": "Initrd path", "kernel_params": "Kernel parameters"}


class ServiceForm(forms.ModelForm):
    """Base of the portal forms: Bootstrap widgets, model validation, no save()."""

    create_only: tuple[str, ...] = ()
    # Service field name -> form field name, where the two differ (errors are mapped back).
    service_field_names: dict[str, str] = {}
    # On create, these are left out of the service call when empty (the service's default).
    omit_when_empty: tuple[str, ...] = ()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.editing = not self.instance._state.adding
        if self.editing:
            for name in self.create_only:
                self.fields.pop(name, None)
        for field in self.fields.values():
            bootstrap_widget(field.widget)

    def save(self, commit=True):
        raise NotImplementedError("Portal forms do not write; the view calls the service.")

    # What goes to the service ---------------------------------------------------------------

    def service_value(self, name: str):
        return self.cleaned_data[name]

    def service_kwargs(self) -> dict:
        """Keyword arguments of the create service, named as the service names them."""
        kwargs = {}
        for name in self.fields:
            value = self.service_value(name)
            if name in self.omit_when_empty and value in (None, "", [], ()):
                continue
            kwargs[self._service_name(name)] = value
        return kwargs

    def service_changes(self) -> dict:
        """Only what the user changed, for the update service."""
        return {self._service_name(name): self.service_value(name) for name in self.changed_data}

    def _service_name(self, form_name: str) -> str:
        for service_name, field_name in self.service_field_names.items():
            if field_name == form_name:
                return service_name
        return form_name

    # Errors coming back from the service --------------------------------------------------

    def add_service_errors(self, exc: ValidationError) -> None:
        if hasattr(exc, "error_dict"):
            for name, errors in exc.error_dict.items():
                field = self.service_field_names.get(name, name)
                messages = [m for e in errors for m in e.messages]
                if field in self.fields:
                    self.add_error(field, messages)
                else:
                    label = "" if name in ("__all__", "non_field_errors") else f"{name}: "
                    self.add_error(None, [f"{label}{m}" for m in messages])
        else:
            self.add_error(None, exc.messages)


def bootstrap_widget(widget: forms.Widget, *, small: bool = False) -> None:
    """Give a widget its Bootstrap 5 class (form-control, form-select or form-check-input)."""
    if isinstance(widget, forms.HiddenInput):
        return
    if isinstance(widget, forms.CheckboxInput):
        css = "form-check-input"
    elif isinstance(widget, forms.Select | forms.SelectMultiple):
        css = "form-select form-select-sm" if small else "form-select"
    else:
        css = "form-control form-control-sm" if small else "form-control"
    widget.attrs["class"] = f"{widget.attrs.get('class', '')} {css}".strip()


def _optional_choice(field: forms.Field, label: str = FROM_TEMPLATE) -> None:
    field.required = False
    field.choices = [("", label), *[c for c in field.choices if c[0] != ""]]


# Inventory ------------------------------------------------------------------------------


class DataCenterForm(ServiceForm):
    class Meta:
        model = DataCenter
        fields = ("name", "description", "storage_type", "compatibility_version")


class ClusterForm(ServiceForm):
    create_only = ("data_center",)

    class Meta:
        model = Cluster
        fields = (
            "data_center",
            "name",
            "description",
            "cpu_type",
            "memory_overcommit_percent",
            "scheduling_policy",
            "scheduling_properties",
            "migration_policy",
            "migration_max_concurrent",
            "migration_bandwidth_mibps",
            "migration_compression",
            "ha_reservation",
            "fencing_enabled",
            "fencing_skip_if_sd_active",
            "fencing_skip_if_connectivity_broken",
            "fencing_connectivity_threshold",
            "mac_pool",
            "max_vm_vcpus",
            "max_vm_memory_mib",
        )
        labels = {"max_vm_memory_mib": "Max VM memory (MiB)", "max_vm_vcpus": "Max vCPUs per VM"}
        widgets = {"scheduling_properties": forms.Textarea(attrs={"rows": 3})}
        help_texts = {
            "scheduling_properties": 'A JSON object, e.g. {"HighUtilization": 80, "LowUtilization": 20}.',
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.editing and not self.initial.get("mac_pool"):
            self.initial["mac_pool"] = MacPool.objects.filter(name="Default").values_list("pk", flat=True).first()

    def clean_scheduling_properties(self):
        return self.cleaned_data.get("scheduling_properties") or {}


class HostForm(ServiceForm):
    create_only = ("cluster", "simulated")

    class Meta:
        model = Host
        fields = (
            "cluster",
            "name",
            "description",
            "address",
            "agent_port",
            "simulated",
            "pm_enabled",
            "pm_type",
            "pm_address",
            "pm_username",
            "pm_password",
        )
        labels = {
            "pm_enabled": "Power management enabled",
            "pm_type": "Fence agent type",
            "pm_address": "Fence agent address",
            "pm_username": "Fence agent user",
            "pm_password": "Fence agent password",
        }
        widgets = {"pm_password": forms.PasswordInput(render_value=False)}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.editing:
            self.fields["pm_password"].help_text = "Leave empty to keep the current password."

    def clean_pm_password(self):
        value = self.cleaned_data.get("pm_password", "")
        if self.editing and not value:
            return self.instance.pm_password  # unchanged: the widget never shows the current one
        return value

    def service_changes(self) -> dict:
        changes = super().service_changes()
        if not self.data.get(self.add_prefix("pm_password")):
            changes.pop("pm_password", None)
        return changes


# Compute --------------------------------------------------------------------------------


STORAGE_ALLOCATION_CHOICES = [("thin", "Thin"), ("clone", "Clone")]
STORAGE_ALLOCATION_HELP = (
    "Thin: qcow2 overlays on the template's disks (quick; the template stays while the VM uses it). "
    "Clone: full copies of the template's disks (the VM is independent of the template)."
)


def storage_allocation_field() -> forms.ChoiceField:
    """oVirt's Storage Allocation of a new VM from a template: Thin (the default, also when
    left out) or Clone."""
    return forms.ChoiceField(
        label="Storage allocation",
        choices=STORAGE_ALLOCATION_CHOICES,
        initial="thin",
        required=False,
        help_text=STORAGE_ALLOCATION_HELP,
    )


class VmForm(ServiceForm):
    """New / edit VM. On a running VM, the fields outside LIVE_FIELDS wait for the next run."""

    create_only = ("cluster", "template", "storage_allocation")
    service_field_names = {"clone": "storage_allocation"}
    storage_allocation = storage_allocation_field()
    omit_when_empty = (
        "template",
        "instance_type",
        "vcpus",
        "memory_mib",
        "guaranteed_memory_mib",
        "os_type",
        "console_type",
        "description",
        *BOOT_OPTION_FIELDS,
    )

    class Meta:
        model = VirtualMachine
        fields = (
            "name",
            "description",
            "cluster",
            "template",
            "storage_allocation",
            "instance_type",
            "os_type",
            "vcpus",
            "memory_mib",
            "guaranteed_memory_mib",
            "ha_enabled",
            "ha_priority",
            "placement_policy",
            "console_type",
            *BOOT_OPTION_FIELDS,
            "owner",
        )
        labels = {
            "vcpus": "Virtual CPUs",
            "memory_mib": "Memory size (MiB)",
            "guaranteed_memory_mib": "Physical memory guaranteed (MiB)",
            "owner": "Owner (uses it in the VM portal)",
            "os_type": "Operating system",
            "ha_enabled": "Highly available",
            "ha_priority": "Priority (HA restart order)",
            "placement_policy": "Migration mode",
            "console_type": "Graphics / console",
            **BOOT_OPTION_LABELS,
        }

    def __init__(self, *args, **kwargs):
        given = dict(kwargs.get("initial") or {})
        super().__init__(*args, **kwargs)
        self.next_run_fields: set[str] = set()
        self.fields["owner"].empty_label = "Nobody"
        self.fields["owner"].queryset = self.fields["owner"].queryset.order_by("username")
        if self.editing:
            self.fields["instance_type"].empty_label = "Custom"
            if self.instance.status in RUNNING:
                self.next_run_fields = {name for name in self.fields if name not in LIVE_FIELDS}
            return
        # Empty means "as the template (or instance type) says", not the model's defaults.
        for name in ("guaranteed_memory_mib", *SHAPE_FIELDS):
            if name not in given:
                self.initial[name] = None
        self.fields["cluster"].empty_label = "Choose a cluster"
        self.fields["cluster"].queryset = Cluster.objects.select_related("data_center")
        self.fields["cluster"].label_from_instance = lambda c: f"{c.name} ({c.data_center.name})"
        self.fields["template"].required = False
        self.fields["template"].empty_label = "Blank"
        self.fields["template"].queryset = Template.objects.exclude(pk=BLANK_TEMPLATE_ID)
        self.fields["instance_type"].empty_label = "Custom"
        for name in ("vcpus", "memory_mib", "guaranteed_memory_mib"):
            self.fields[name].required = False
            self.fields[name].widget.attrs["placeholder"] = FROM_TEMPLATE.lower()
        for name in ("os_type", "console_type"):
            _optional_choice(self.fields[name])
        for name in ("description", *BOOT_OPTION_FIELDS):
            self.fields[name].widget.attrs["placeholder"] = FROM_TEMPLATE.lower()

    def service_value(self, name: str):
        if name == "storage_allocation":
            return self.cleaned_data[name] == "clone"
        return super().service_value(name)

    def clean(self):
        data = super().clean()
        template = data.get("template")
        if not self.editing and template is not None:
            # Boot options left empty come from the template: validate the VM as it will be.
            for name in BOOT_OPTION_FIELDS:
                if not data.get(name):
                    data[name] = getattr(template, name)
        return data


class TemplateForm(ServiceForm):
    """New template (optionally from a VM that is down, or a new version of a base template) / edit."""

    create_only = ("cluster", "vm", "base_template")
    omit_when_empty = ("cluster", "vm", "base_template")

    vm = forms.ModelChoiceField(
        queryset=VirtualMachine.objects.all(), required=False, widget=forms.HiddenInput, label="From VM"
    )

    class Meta:
        model = Template
        fields = (
            "name",
            "base_template",
            "version_name",
            "cluster",
            "description",
            "os_type",
            "vcpus",
            "memory_mib",
            "console_type",
            *BOOT_OPTION_FIELDS,
        )
        labels = {
            "vcpus": "Virtual CPUs",
            "memory_mib": "Memory size (MiB)",
            "os_type": "Operating system",
            **BOOT_OPTION_LABELS,
        }
        help_texts = {"base_template": "Set to create a new version of that template (its name is kept)."}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.editing:
            return
        self.fields["base_template"].queryset = Template.objects.filter(base_template__isnull=True).exclude(
            pk=BLANK_TEMPLATE_ID
        )
        self.fields["base_template"].empty_label = "(a new base template)"
        self.fields["name"].required = False
        vm = self.initial.get("vm")
        if isinstance(vm, VirtualMachine):
            self.source_vm = vm
            self.initial["vm"] = vm.pk
            for name in SHAPE_FIELDS:
                self.initial[name] = getattr(vm, name)

    def clean(self):
        data = super().clean()
        if not self.editing:
            base = data.get("base_template")
            if base is not None:
                data["name"] = base.name
                self.instance.name = base.name
            elif not data.get("name") and "name" not in self.errors:
                self.add_error("name", "Name the template (or choose a base template for a new version).")
        return data

    def service_kwargs(self) -> dict:
        kwargs = super().service_kwargs()
        if kwargs.get("vm") is not None:
            # The VM's hardware is the template's; only send what the user changed here.
            for name in SHAPE_FIELDS:
                if name not in self.changed_data:
                    kwargs.pop(name, None)
        return kwargs


# Storage --------------------------------------------------------------------------------


class StorageDomainForm(ServiceForm):
    create_only = ("role",)

    class Meta:
        model = StorageDomain
        fields = (
            "name",
            "description",
            "data_center",
            "type",
            "role",
            "path",
            "shared",
            "max_overcommit_percent",
            "critical_space_gib",
            "warning_low_space_percent",
        )
        labels = {
            "max_overcommit_percent": "Max overcommit (%)",
            "critical_space_gib": "Critical space action blocker (GiB)",
            "warning_low_space_percent": "Warning low space indicator (%)",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "data_center" in self.fields:
            self.fields["data_center"].empty_label = "(unattached)"


class DiskForm(ServiceForm):
    """New disk (optionally attached to a VM at once) / edit (alias, description, extend)."""

    create_only = ("storage_domain", "format", "allocation", "shareable", "vm", "interface", "bootable")
    omit_when_empty = ("vm",)
    service_field_names = {"provisioned_size": "size_gib"}

    size_gib = forms.DecimalField(
        label="Size (GiB)", min_value=Decimal("0.001"), max_value=64 * 1024, decimal_places=3, help_text="Virtual size."
    )
    vm = forms.ModelChoiceField(queryset=VirtualMachine.objects.all(), required=False, widget=forms.HiddenInput)
    interface = forms.ChoiceField(choices=DiskInterface.choices, initial=DiskInterface.VIRTIO)
    bootable = forms.BooleanField(required=False)

    class Meta:
        model = Disk
        fields = ("alias", "description", "storage_domain", "size_gib", "format", "allocation", "shareable")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.editing:
            self.initial.setdefault("size_gib", round(self.instance.provisioned_size / GIB, 3))
            self.fields["size_gib"].help_text = "A disk can only grow."
        else:
            self.fields["storage_domain"].queryset = StorageDomain.objects.filter(role=StorageDomainRole.DATA)
        self.order_fields(["alias", "description", "storage_domain", "size_gib"])

    def service_value(self, name: str):
        if name == "size_gib":
            return int(self.cleaned_data[name] * GIB)
        return super().service_value(name)

    def service_changes(self) -> dict:
        changes = super().service_changes()
        if changes.get("provisioned_size") == self.instance_size_before:
            changes.pop("provisioned_size")
        return changes

    @property
    def instance_size_before(self) -> int:
        return int(round(float(self.initial.get("size_gib") or 0) * GIB))


# Networking -----------------------------------------------------------------------------


class LogicalNetworkForm(ServiceForm):
    create_only = ("data_center", "clusters")

    clusters = forms.ModelMultipleChoiceField(
        queryset=Cluster.objects.select_related("data_center"),
        required=False,
        help_text="Attach the network to these clusters of the data center.",
    )

    class Meta:
        model = LogicalNetwork
        fields = (
            "data_center",
            "name",
            "description",
            "vlan_tag",
            "mtu",
            "vm_network",
            "required",
            "is_migration",
            "is_display",
        )
        labels = {
            "vlan_tag": "VLAN tag",
            "mtu": "MTU",
            "vm_network": "VM network",
            "is_migration": "Migration network",
            "is_display": "Display network",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "clusters" in self.fields:
            self.fields["clusters"].label_from_instance = lambda c: f"{c.name} ({c.data_center.name})"

    def clean_mtu(self):
        return self.cleaned_data.get("mtu") or 0


class VnicProfileForm(ServiceForm):
    create_only = ("network",)

    class Meta:
        model = VnicProfile
        fields = ("network", "name", "description", "port_mirroring", "pass_through")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "network" in self.fields:
            self.fields["network"].queryset = LogicalNetwork.objects.filter(vm_network=True).select_related(
                "data_center"
            )
            self.fields["network"].label_from_instance = lambda n: f"{n.name} ({n.data_center.name})"


class VmNicForm(ServiceForm):
    """New / edit network interface of a VM (its instance carries the VM).

    The profiles offered are those of the networks attached to the VM's cluster; empty
    means no network. On create, an empty name or MAC is left to the service (the next
    free nicN, the next address of the cluster's MAC pool)."""

    omit_when_empty = ("name", "mac")

    class Meta:
        model = VmNic
        fields = ("name", "profile", "interface", "mac", "linked", "plugged")
        labels = {
            "profile": "vNIC profile",
            "interface": "Type",
            "mac": "MAC address",
            "linked": "Link state: up",
            "plugged": "Card status: plugged",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        vm = self.instance.vm
        cluster_networks = ClusterNetwork.objects.filter(cluster_id=vm.cluster_id).values("network_id")
        offered = Q(network_id__in=cluster_networks)
        if self.instance.profile_id:  # kept as it is even if its network has left the cluster since
            offered |= Q(pk=self.instance.profile_id)
        profile = self.fields["profile"]
        profile.queryset = VnicProfile.objects.filter(offered).select_related("network")
        profile.label_from_instance = lambda p: f"{p.name} ({p.network.name})"
        profile.empty_label = "No network"
        profile.help_text = f"Profiles of the networks attached to cluster {vm.cluster.name}."
        if not self.editing:
            self.fields["name"].required = False
            self.fields["mac"].required = False
            self.fields["mac"].widget.attrs["placeholder"] = "from the MAC pool"
            self.fields["mac"].help_text = "Leave empty to take the next free address of the cluster's MAC pool."


class AffinityGroupForm(ServiceForm):
    """New / edit affinity group (its instance carries the cluster): the VMs and hosts offered
    are the cluster's."""

    class Meta:
        model = AffinityGroup
        fields = (
            "name",
            "description",
            "priority",
            "vm_rule",
            "vm_enforcing",
            "host_rule",
            "host_enforcing",
            "vms",
            "hosts",
        )
        labels = {
            "vm_rule": "VM affinity rule",
            "vm_enforcing": "VM rule enforcing (a hard rule)",
            "host_rule": "Host affinity rule",
            "host_enforcing": "Host rule enforcing (a hard rule)",
            "vms": "Virtual machines",
        }
        help_texts = {
            "vm_rule": "Positive: the VMs run together on one host; negative: each on a different host.",
            "host_rule": "Positive: the VMs run on the hosts below; negative: they avoid them.",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        cluster = self.instance.cluster
        vms, hosts = self.fields["vms"], self.fields["hosts"]
        vms.queryset = VirtualMachine.objects.filter(cluster_id=cluster.pk).only("id", "name")
        hosts.queryset = Host.objects.filter(cluster_id=cluster.pk).only("id", "name")
        vms.help_text = f"VMs of cluster {cluster.name}."
        hosts.help_text = f"Hosts of cluster {cluster.name}: needed when the host rule is not disabled."
        for field in (vms, hosts):
            field.widget.attrs["size"] = 8


# Confirmations and small action forms ----------------------------------------------------


class RemoveVmForm(forms.Form):
    remove_disks = forms.BooleanField(
        required=False, initial=True, label="Remove the VM's disks too", widget=forms.CheckboxInput()
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        bootstrap_widget(self.fields["remove_disks"].widget)


class SnapshotForm(forms.Form):
    description = forms.CharField(max_length=255)
    with_memory = forms.BooleanField(required=False, label="Save memory")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            bootstrap_widget(field.widget)


# Permissions -----------------------------------------------------------------------------


class PermissionForm(forms.Form):
    """Grant a role to a user or a group on the object named by the hidden fields."""

    user = forms.ModelChoiceField(queryset=None, required=False, empty_label="User…")
    group = forms.ModelChoiceField(queryset=None, required=False, empty_label="or group…")
    role = forms.ModelChoiceField(queryset=None, empty_label="Role…")
    object_type = forms.ChoiceField(choices=PermissionObjectType.choices, widget=forms.HiddenInput)
    object_id = forms.UUIDField(required=False, widget=forms.HiddenInput)

    def __init__(self, *args, **kwargs):
        from django.contrib.auth import get_user_model
        from django.contrib.auth.models import Group

        super().__init__(*args, **kwargs)
        self.fields["user"].queryset = get_user_model().objects.filter(is_active=True).order_by("username")
        self.fields["group"].queryset = Group.objects.order_by("name")
        self.fields["role"].queryset = Role.objects.order_by("-administrative", "name")
        self.fields["role"].label_from_instance = lambda r: f"{r.name}{' (admin)' if r.administrative else ''}"
        for field in self.fields.values():
            bootstrap_widget(field.widget, small=True)

    def clean(self):
        data = super().clean()
        if bool(data.get("user")) == bool(data.get("group")):
            raise ValidationError("Choose a user or a group (one of the two).")
        return data
