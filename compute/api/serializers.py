"""Serializers of the compute API: VMs, templates, instance types, snapshots, affinity groups."""

from django.contrib.auth import get_user_model
from rest_framework import serializers

from inventory.api.serializers import SelfUrlField, ValidatedModelSerializer, name_of, with_model_defaults
from inventory.models import Cluster, Host

from ..models import BLANK_TEMPLATE_ID, AffinityGroup, InstanceType, Snapshot, Template, VirtualMachine

# What a new VM takes from its template unless given (compute.services.SHAPE_FIELDS).
SHAPE_FIELDS = (
    "description",
    "os_type",
    "vcpus",
    "memory_mib",
    "console_type",
    "kernel_path",
    "initrd_path",
    "kernel_params",
)


class InstanceTypeSerializer(ValidatedModelSerializer):
    url = SelfUrlField("instance-type")

    class Meta:
        model = InstanceType
        fields = ("id", "url", "name", "description", "memory_mib", "vcpus", "created_at", "updated_at")

    def create(self, validated_data):
        from ..services import create_instance_type

        data = with_model_defaults(InstanceType, validated_data, ("description",))
        return self.saved(create_instance_type(user=self.user, **data))

    def update(self, instance, validated_data):
        from ..services import update_instance_type

        return self.saved(update_instance_type(instance, user=self.user, **validated_data))


class TemplateSerializer(ValidatedModelSerializer):
    url = SelfUrlField("template")
    cluster_name = name_of("cluster.name")
    vm = serializers.PrimaryKeyRelatedField(
        queryset=VirtualMachine.objects.all(),
        write_only=True,
        required=False,
        allow_null=True,
        help_text="Create the template from this (down) VM: its shape and a copy of its disks.",
    )

    class Meta:
        model = Template
        fields = (
            "id",
            "url",
            "name",
            "description",
            "cluster",
            "cluster_name",
            "base_template",
            "version_number",
            "version_name",
            "os_type",
            "vcpus",
            "memory_mib",
            "console_type",
            "kernel_path",
            "initrd_path",
            "kernel_params",
            "vm",
            "created_at",
            "updated_at",
        )
        read_only_fields = ("version_number",)
        extra_kwargs = {"name": {"required": False, "help_text": "Required, except for a version (base_template)."}}
        create_only_fields = ("cluster", "base_template", "vm")
        # The service numbers versions (and names them after their base template).
        validation_exclude = ("version_number",)

    def validate(self, attrs):
        if self.instance is None and not attrs.get("base_template") and not attrs.get("name"):
            raise serializers.ValidationError({"name": ["This field is required."]})
        return super().validate(attrs)

    def prepare_instance(self, instance, attrs):
        base = attrs.get("base_template")
        if self.instance is None and base is not None:
            base = base.base_template or base
            instance.base_template, instance.name = base, base.name
            return ("base_template", "name")
        return ()

    def create(self, validated_data):
        from ..services import create_template

        data = dict(validated_data)
        if data.get("base_template") is not None:
            data.setdefault("name", data["base_template"].name)
        return self.saved(create_template(user=self.user, **data))

    def update(self, instance, validated_data):
        from ..services import update_template

        return self.saved(update_template(instance, user=self.user, **validated_data))


class VmSerializer(ValidatedModelSerializer):
    url = SelfUrlField("vm")
    cluster_name = name_of("cluster.name")
    data_center_name = name_of("data_center.name")
    template_name = name_of("template.name")
    instance_type_name = name_of("instance_type.name")
    run_on_host_name = name_of("run_on_host.name")
    owner = serializers.PrimaryKeyRelatedField(
        queryset=get_user_model().objects.all(),
        required=False,
        allow_null=True,
        help_text="The user the VM belongs to: they may use it and it counts in their quota.",
    )
    owner_name = name_of("owner.username")
    clone = serializers.BooleanField(
        write_only=True,
        default=False,
        help_text=(
            "On create: copy the template's disks in full (oVirt's Storage Allocation: Clone) instead of "
            "thin qcow2 overlays on them. Once copied, the VM no longer depends on the template: its "
            "template becomes Blank, and the template can be removed."
        ),
    )

    class Meta:
        model = VirtualMachine
        fields = (
            "id",
            "url",
            "name",
            "description",
            "comment",
            "cluster",
            "cluster_name",
            "data_center",
            "data_center_name",
            "template",
            "template_name",
            "clone",
            "instance_type",
            "instance_type_name",
            "os_type",
            "vcpus",
            "memory_mib",
            "guaranteed_memory_mib",
            "console_type",
            "kernel_path",
            "initrd_path",
            "kernel_params",
            "ha_enabled",
            "ha_priority",
            "resume_behavior",
            "placement_policy",
            "pinned_hosts",
            "status",
            "status_changed_at",
            "run_on_host",
            "run_on_host_name",
            "external",
            "next_run_config",
            "owner",
            "owner_name",
            "guest_hostname",
            "guest_os",
            "guest_kernel",
            "guest_ips",
            "guest_timezone",
            "guest_users",
            "created_at",
            "updated_at",
        )
        read_only_fields = (
            "data_center",
            "status",
            "status_changed_at",
            "run_on_host",
            "external",
            "next_run_config",
            "guest_hostname",
            "guest_os",
            "guest_kernel",
            "guest_ips",
            "guest_timezone",
            "guest_users",
        )
        extra_kwargs = {
            "template": {"required": False, "help_text": "Empty: the Blank template."},
            "pinned_hosts": {"required": False},
        }
        create_only_fields = ("cluster", "template", "clone")

    def is_unchanged(self, name: str, value) -> bool:
        if name == "clone":  # write-only, for create: false (the default of a PUT) asks nothing
            return not value
        return super().is_unchanged(name, value)

    def prepare_instance(self, instance, attrs):
        """The VM as create_vm makes it: the data center from the cluster (so a name taken in the
        data center is a field error here), the shape from the template and instance type."""
        filled = []
        if instance.cluster_id:
            instance.data_center_id = instance.cluster.data_center_id
            filled.append("data_center")
        if self.instance is None:
            template = attrs.get("template") or Template.objects.get(pk=BLANK_TEMPLATE_ID)
            instance.template = template
            filled.append("template")
            given = set(attrs)
            for name in SHAPE_FIELDS:
                if name not in given:
                    setattr(instance, name, getattr(template, name))
            itype = attrs.get("instance_type")
            if itype is not None:
                instance.vcpus = attrs.get("vcpus", itype.vcpus)
                instance.memory_mib = attrs.get("memory_mib", itype.memory_mib)
            if "guaranteed_memory_mib" not in given:
                instance.guaranteed_memory_mib = instance.memory_mib
        return filled

    def create(self, validated_data):
        from ..services import create_vm

        return self.saved(create_vm(user=self.user, **validated_data))

    def update(self, instance, validated_data):
        from ..services import update_vm

        return self.saved(update_vm(instance, user=self.user, **validated_data))


USER_WRITABLE_VM_FIELDS = frozenset(
    {"name", "description", "comment", "cluster", "template", "clone", "instance_type", "vcpus", "memory_mib"}
)


class OwnVmSerializer(VmSerializer):
    """A VM as a user who is not an administrator sees and writes it (VmViewSet): on create,
    a name, a template they may use, optionally the cluster (default: the template's), a
    description, vCPUs, memory or an instance type, and `clone`;
    `compute.services.create_own_vm` makes the VM theirs, within their quota. On update
    (with `vm.edit`) the name, description and comment only; the rest is for administrators."""

    owner = serializers.PrimaryKeyRelatedField(read_only=True)

    class Meta(VmSerializer.Meta):
        read_only_fields = tuple(name for name in VmSerializer.Meta.fields if name not in USER_WRITABLE_VM_FIELDS)
        extra_kwargs = {
            "template": {"required": True, "help_text": "A template you may use (template.use)."},
            "cluster": {"required": False, "help_text": "Empty: the template's cluster."},
        }
        create_only_fields = ("cluster", "template", "clone", "instance_type", "vcpus", "memory_mib")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from inventory.choices import ActionGroup
        from inventory.permissions import visible_clusters, visible_templates

        user = self.user
        if "template" in self.fields and user is not None:
            self.fields["template"].queryset = visible_templates(user, ActionGroup.TEMPLATE_USE)
            creatable = visible_templates(user, ActionGroup.VM_CREATE).values("cluster_id")
            self.fields["cluster"].queryset = visible_clusters(user, ActionGroup.VM_CREATE) | Cluster.objects.filter(
                pk__in=creatable
            )

    def validate(self, attrs):
        if self.instance is None and attrs.get("template") is not None and attrs.get("cluster") is None:
            if attrs["template"].cluster_id is None:
                raise serializers.ValidationError(
                    {"cluster": [f"Template {attrs['template']} belongs to no cluster: choose the cluster of the VM."]}
                )
            attrs["cluster"] = attrs["template"].cluster
        return super().validate(attrs)

    def create(self, validated_data):
        from ..services import create_own_vm

        return self.saved(create_own_vm(user=self.user, **validated_data))


class SnapshotSerializer(ValidatedModelSerializer):
    url = SelfUrlField("snapshot")
    vm_name = name_of("vm.name")

    class Meta:
        model = Snapshot
        fields = ("id", "url", "vm", "vm_name", "description", "with_memory", "status", "created_at", "updated_at")
        read_only_fields = ("status",)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        user = self.user
        if user is not None and not user.is_staff and "vm" in self.fields:
            from inventory.permissions import visible_vms

            self.fields["vm"].queryset = visible_vms(user)  # another user's VM: "does not exist"

    def create(self, validated_data):
        from ..services import create_snapshot

        data = with_model_defaults(Snapshot, validated_data, ("with_memory",))
        vm = data.pop("vm")
        return self.saved(create_snapshot(vm, user=self.user, **data))


class AffinityGroupSerializer(ValidatedModelSerializer):
    """An affinity group of one cluster: its VMs and hosts as lists of ids (in and out) and of
    names (out). compute.services checks that every member belongs to the group's cluster."""

    url = SelfUrlField("affinity-group")
    cluster_name = name_of("cluster.name")
    vms = serializers.PrimaryKeyRelatedField(
        queryset=VirtualMachine.objects.all(),
        many=True,
        required=False,
        help_text="The VMs of the group (ids), all of its cluster.",
    )
    vm_names = serializers.SlugRelatedField(source="vms", slug_field="name", many=True, read_only=True)
    hosts = serializers.PrimaryKeyRelatedField(
        queryset=Host.objects.all(),
        many=True,
        required=False,
        help_text="The hosts of the host rule (ids), all of its cluster; required when host_rule is not disabled.",
    )
    host_names = serializers.SlugRelatedField(source="hosts", slug_field="name", many=True, read_only=True)

    class Meta:
        model = AffinityGroup
        fields = (
            "id",
            "url",
            "cluster",
            "cluster_name",
            "name",
            "description",
            "priority",
            "vm_rule",
            "vm_enforcing",
            "host_rule",
            "host_enforcing",
            "vms",
            "vm_names",
            "hosts",
            "host_names",
            "created_at",
            "updated_at",
        )
        create_only_fields = ("cluster",)

    def create(self, validated_data):
        from ..services import create_affinity_group

        return self.saved(create_affinity_group(user=self.user, **validated_data))

    def update(self, instance, validated_data):
        from ..services import update_affinity_group

        return self.saved(update_affinity_group(instance, user=self.user, **validated_data))


class ConsoleTicketRequestSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(
        choices=[("serial", "Serial console"), ("vnc", "VNC display")],
        default="serial",
        help_text="The serial console (any VM) or the VNC display (a VM whose console type is VNC).",
    )


class ConsoleTicketSerializer(serializers.Serializer):
    """A one-time console ticket: open `url` (a websocket) within `expires_in` seconds."""

    ticket = serializers.CharField(help_text="Good for one websocket connection, by the user who asked for it.")
    kind = serializers.CharField()
    vm_id = serializers.UUIDField()
    url = serializers.CharField(help_text="The websocket to open: binary frames carry the console's bytes.")
    expires_in = serializers.IntegerField(help_text="Seconds the ticket stays valid if unused.")


class MigrateRequestSerializer(serializers.Serializer):
    host = serializers.PrimaryKeyRelatedField(
        queryset=Host.objects.all(),
        required=False,
        allow_null=True,
        help_text="The destination host; left out, the cluster's scheduling policy picks one.",
    )
