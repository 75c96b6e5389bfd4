"""Serializers of the inventory API, and the base every app's API serializers build on.

`ValidatedModelSerializer` runs the model's own rules (`full_clean()`) during validation, so
the API answers 400 with field messages exactly where the portal's forms would, and writes
only through the app's service functions: `create()` / `update()` call `create_*` /
`update_*`, never `save()`.

`EventSerializer` and `JobSerializer` are also the websocket payloads (inventory.audit): they
hold no field that needs a request.
"""

import copy
from collections.abc import Iterable

from django.contrib.auth import get_user_model
from django.core.exceptions import NON_FIELD_ERRORS
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.reverse import reverse
from rest_framework.settings import api_settings

from ..models import Cluster, DataCenter, Event, Host, Job, Permission, Quota, Role, Step

# Helpers ----------------------------------------------------------------------------------


@extend_schema_field({"type": "string", "format": "uri", "nullable": True, "readOnly": True})
class SelfUrlField(serializers.Field):
    """The object's API URL; None when there is no request (websocket payloads, tasks)."""

    def __init__(self, basename: str, **kwargs):
        self.basename = basename
        kwargs.update(read_only=True, source="*")
        super().__init__(**kwargs)

    def to_representation(self, value):
        request = self.context.get("request")
        if request is None:
            return None
        return reverse(f"api:{self.basename}-detail", args=[value.pk], request=request)


def name_of(source: str, **kwargs) -> serializers.CharField:
    """A read-only `<relation>_name` field; null when the relation is empty."""
    return serializers.CharField(source=source, read_only=True, allow_null=True, **kwargs)


def with_model_defaults(model: type[models.Model], data: dict, names: Iterable[str]) -> dict:
    """Fill the keyword arguments a service requires from the model's field defaults."""
    for name in names:
        if name not in data:
            field = model._meta.get_field(name)
            data[name] = field.get_default() if field.has_default() else ("" if field.blank else None)
    return data


def error_detail(exc: DjangoValidationError, model: type[models.Model], writable: Iterable[str] = ()) -> dict:
    """Django's ValidationError as DRF field errors.

    A clash with a multi-field unique constraint (a VM name within its data center, a NIC
    name within its VM, a VLAN tag within its data center) is reported on the field of the
    set that the client wrote and that is not a relation (`name`, `vlan_tag`), where a user
    can fix it, rather than as a non-field error; a conditional constraint's default text
    ("Constraint “x” is violated.") becomes Django's "<Model> with this <fields> already exists.".
    """
    if not hasattr(exc, "error_dict"):
        return {api_settings.NON_FIELD_ERRORS_KEY: exc.messages}
    writable = set(writable)
    detail: dict[str, list[str]] = {}
    for field, errors in exc.error_dict.items():
        for error in errors:
            key, messages = api_settings.NON_FIELD_ERRORS_KEY if field == NON_FIELD_ERRORS else field, error.messages
            if field == NON_FIELD_ERRORS:
                key, messages = unique_error_detail(error, model, writable) or (key, messages)
            detail.setdefault(key, []).extend(messages)
    return detail


def unique_error_detail(error: DjangoValidationError, model: type[models.Model], writable: set[str]):
    """(field, messages) for a unique-constraint error of `model`, or None."""
    if error.code == "unique_together":
        fields, messages = (error.params or {}).get("unique_check", ()), error.messages
    else:
        constraint = next(
            (
                c
                for c in model._meta.constraints
                if isinstance(c, models.UniqueConstraint)
                and c.fields
                and c.condition is not None
                and error.messages == [c.get_violation_error_message()]
            ),
            None,
        )
        if constraint is None:
            return None
        conditions = [child[0].split("__")[0] for child in constraint.condition.children if isinstance(child, tuple)]
        fields = (*constraint.fields, *(name for name in conditions if name not in constraint.fields))
        messages = error.messages
        if constraint.violation_error_message == constraint.default_violation_error_message:
            messages = model().unique_error_message(model, fields).messages
    names = [name for name in fields if name in writable]
    plain = [name for name in names if not model._meta.get_field(name).is_relation]
    if not names:
        return None
    return (plain or names)[-1], messages


# Base serializer --------------------------------------------------------------------------


class ValidatedModelSerializer(serializers.ModelSerializer):
    """A ModelSerializer that validates with `full_clean()` and saves through a service.

    Meta options beyond ModelSerializer's:

    - `create_only_fields`: writable on create; on update a different value is a 400 (an
      equal one is dropped, as every unchanged value is, so a GET body can be PUT back).
    - `validation_exclude`: model fields full_clean() skips because the service sets them
      (e.g. a template's version number).

    Subclasses implement `create()` / `update()` by calling the service function and passing
    its result to `self.saved(...)`, which keeps the Job when the service returns one.
    """

    job: Job | None = None

    def get_validators(self) -> list:
        """No DRF unique-together validators: full_clean() checks the model's constraints,
        with the model's messages, and knows which fields the service fills in."""
        return list(getattr(self.Meta, "validators", []))

    @property
    def user(self):
        request = self.context.get("request")
        return getattr(request, "user", None)

    # Validation -------------------------------------------------------------------------

    def validate(self, attrs: dict) -> dict:
        attrs = super().validate(attrs)
        if self.instance is not None:
            attrs = self.changes_only(attrs)
        instance, exclude = self.build_instance(attrs)
        try:
            instance.full_clean(exclude=exclude)
        except DjangoValidationError as exc:
            model = self.Meta.model
            raise serializers.ValidationError(error_detail(exc, model, self.writable_field_names())) from None
        return attrs

    def changes_only(self, attrs: dict) -> dict:
        """On update keep only what changes, so a GET body PUT back is a no-op (no event, nothing
        queued for a running VM's next run); a create-only field may come back unchanged only."""
        create_only = set(getattr(self.Meta, "create_only_fields", ()))
        changes, errors = {}, {}
        for name, value in attrs.items():
            if self.is_unchanged(name, value):
                continue
            if name in create_only:
                errors[name] = ["This field cannot be changed once the object exists."]
            changes[name] = value
        if errors:
            raise serializers.ValidationError(errors)
        return changes

    def is_unchanged(self, name: str, value) -> bool:
        field = next((f for f in self.Meta.model._meta.get_fields() if f.name == name), None)
        if field is not None and field.many_to_many:
            current = set(getattr(self.instance, name).values_list("pk", flat=True))
            return {getattr(v, "pk", v) for v in value} == current
        current = getattr(self.instance, name, None)
        if isinstance(value, models.Model) or isinstance(current, models.Model):
            return getattr(value, "pk", value) == getattr(current, "pk", current)
        return value == current

    def writable_field_names(self) -> list[str]:
        return [field.source for field in self._writable_fields if field.source != "*"]

    def build_instance(self, attrs: dict) -> tuple[models.Model, list[str]]:
        """The object as it would be after the write, and the fields full_clean must skip.

        On create the fields the client did not give and that have no default are set by the
        service (a VM's data center, a NIC's MAC) and are skipped unless `prepare_instance`
        fills them in.
        """
        model = self.Meta.model
        concrete = {field.name: field for field in model._meta.concrete_fields}
        values = {name: value for name, value in attrs.items() if name in concrete}
        if self.instance is None:
            instance = model(**values)
        else:
            instance = copy.copy(self.instance)
            for name, value in values.items():
                setattr(instance, name, value)
        filled = set(self.prepare_instance(instance, attrs) or ())
        exclude = list(getattr(self.Meta, "validation_exclude", ()))
        if self.instance is None:
            exclude += [
                name
                for name, field in concrete.items()
                if name not in values and name not in filled and not field.has_default()
            ]
        return instance, exclude

    def prepare_instance(self, instance: models.Model, attrs: dict) -> Iterable[str]:
        """Set what the service derives (a VM's data center, its template's shape); return those field names."""
        return ()

    # Saving -------------------------------------------------------------------------------

    def saved(self, result):
        """The service's result, `obj` or `(obj, job)`: keep the Job, return the object."""
        if isinstance(result, tuple):
            obj, self.job = result
            return obj
        return result

    def create(self, validated_data):  # pragma: no cover - every subclass names its service
        raise NotImplementedError(f"{type(self).__name__} must create through a service function.")

    def update(self, instance, validated_data):  # pragma: no cover
        raise NotImplementedError(f"{type(self).__name__} must update through a service function.")


class ConflictSerializer(serializers.Serializer):
    """The body of a 409: the action is not allowed in the object's current state."""

    detail = serializers.CharField()
    code = serializers.CharField()
    details = serializers.DictField(
        required=False, help_text="Context of some refusals, e.g. a placement's rejections."
    )


# Audit: events and jobs -------------------------------------------------------------------


class EventSerializer(serializers.ModelSerializer):
    class Meta:
        model = Event
        fields = (
            "id",
            "time",
            "severity",
            "code",
            "message",
            "user",
            "username",
            "correlation_id",
            "object_type",
            "object_id",
            "object_name",
            "data_center_id",
            "cluster_id",
            "host_id",
            "vm_id",
            "storage_domain_id",
        )
        read_only_fields = fields


class StepSerializer(serializers.ModelSerializer):
    class Meta:
        model = Step
        fields = ("number", "description", "status", "progress", "started_at", "ended_at")
        read_only_fields = fields


class JobSerializer(serializers.ModelSerializer):
    steps = StepSerializer(many=True, read_only=True)
    is_active = serializers.BooleanField(read_only=True)

    class Meta:
        model = Job
        fields = (
            "id",
            "action_type",
            "description",
            "status",
            "is_active",
            "progress",
            "error",
            "owner",
            "correlation_id",
            "started_at",
            "updated_at",
            "ended_at",
            "object_type",
            "object_id",
            "object_name",
            "data_center_id",
            "cluster_id",
            "host_id",
            "vm_id",
            "storage_domain_id",
            "steps",
        )
        read_only_fields = fields


class UserSerializer(serializers.ModelSerializer):
    url = SelfUrlField("user")

    class Meta:
        model = get_user_model()
        fields = (
            "id",
            "url",
            "username",
            "first_name",
            "last_name",
            "email",
            "is_staff",
            "is_superuser",
            "is_active",
            "last_login",
            "date_joined",
        )
        read_only_fields = fields


# Data centers, clusters, hosts -----------------------------------------------------------


class DataCenterSerializer(ValidatedModelSerializer):
    url = SelfUrlField("data-center")

    class Meta:
        model = DataCenter
        fields = (
            "id",
            "url",
            "name",
            "description",
            "storage_type",
            "compatibility_version",
            "status",
            "created_at",
            "updated_at",
        )
        read_only_fields = ("status",)

    def create(self, validated_data):
        from ..services import create_data_center

        data = with_model_defaults(DataCenter, validated_data, ("description", "storage_type", "compatibility_version"))
        return self.saved(create_data_center(user=self.user, **data))

    def update(self, instance, validated_data):
        from ..services import update_data_center

        return self.saved(update_data_center(instance, user=self.user, **validated_data))


class ClusterSerializer(ValidatedModelSerializer):
    url = SelfUrlField("cluster")
    data_center_name = name_of("data_center.name")
    mac_pool_name = name_of("mac_pool.name")

    class Meta:
        model = Cluster
        fields = (
            "id",
            "url",
            "data_center",
            "data_center_name",
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
            "mac_pool_name",
            "max_vm_vcpus",
            "max_vm_memory_mib",
            "created_at",
            "updated_at",
        )
        extra_kwargs = {"mac_pool": {"required": False, "help_text": "Empty: the Default MAC pool."}}
        create_only_fields = ("data_center",)

    def create(self, validated_data):
        from ..services import create_cluster

        return self.saved(create_cluster(user=self.user, **validated_data))

    def update(self, instance, validated_data):
        from ..services import update_cluster

        return self.saved(update_cluster(instance, user=self.user, **validated_data))


class HostSerializer(ValidatedModelSerializer):
    url = SelfUrlField("host")
    cluster_name = name_of("cluster.name")
    data_center = serializers.UUIDField(source="cluster.data_center_id", read_only=True)

    class Meta:
        model = Host
        fields = (
            "id",
            "url",
            "cluster",
            "cluster_name",
            "data_center",
            "name",
            "description",
            "address",
            "agent_port",
            "simulated",
            "status",
            "status_detail",
            "cpu_model",
            "cpu_sockets",
            "cpu_cores",
            "cpu_threads",
            "memory_mib",
            "is_spm",
            "pm_enabled",
            "pm_type",
            "pm_address",
            "pm_username",
            "pm_password",
            "cert_fingerprint",
            "cert_expires_at",
            "last_heartbeat",
            "created_at",
            "updated_at",
        )
        read_only_fields = (
            "status",
            "status_detail",
            "cpu_model",
            "cpu_sockets",
            "cpu_cores",
            "cpu_threads",
            "memory_mib",
            "is_spm",
            "cert_fingerprint",
            "cert_expires_at",
            "last_heartbeat",
        )
        extra_kwargs = {"pm_password": {"write_only": True, "style": {"input_type": "password"}}}
        create_only_fields = ("cluster", "simulated")

    def create(self, validated_data):
        from ..services import add_host

        return self.saved(add_host(user=self.user, **validated_data))

    def update(self, instance, validated_data):
        from ..services import update_host

        return self.saved(update_host(instance, user=self.user, **validated_data))


# Roles, permissions, quotas ---------------------------------------------------------------


class RoleSerializer(serializers.ModelSerializer):
    url = SelfUrlField("role")
    actions = serializers.ListField(
        source="action_names", child=serializers.CharField(), read_only=True, help_text="The role's action groups."
    )

    class Meta:
        model = Role
        fields = ("id", "url", "name", "description", "administrative", "actions", "created_at", "updated_at")
        read_only_fields = fields


def one_principal(attrs: dict, model: type[models.Model], constraint_name: str) -> None:
    """A user or a group, exactly one: the model's own message when not (full_clean() skips the
    check when neither was sent)."""
    if (attrs.get("user") is None) == (attrs.get("group") is None):
        constraint = next(c for c in model._meta.constraints if c.name == constraint_name)
        raise serializers.ValidationError({api_settings.NON_FIELD_ERRORS_KEY: [constraint.violation_error_message]})


class PermissionSerializer(ValidatedModelSerializer):
    """A grant of a role to a user or a group on the system or one object (create and delete
    only: a grant is changed by revoking it and granting another)."""

    url = SelfUrlField("permission")
    user = serializers.PrimaryKeyRelatedField(
        queryset=get_user_model().objects.all(), required=False, allow_null=True, help_text="Give a user or a group."
    )
    username = name_of("user.username")
    group_name = name_of("group.name")
    role_name = name_of("role.name")
    object_name = serializers.CharField(read_only=True, help_text="The name of the object (empty for the system).")

    class Meta:
        model = Permission
        fields = (
            "id",
            "url",
            "user",
            "username",
            "group",
            "group_name",
            "role",
            "role_name",
            "object_type",
            "object_id",
            "object_name",
            "created_at",
        )
        extra_kwargs = {"group": {"required": False, "allow_null": True}}

    def validate(self, attrs):
        from ..permissions import object_of

        one_principal(attrs, Permission, "permission_one_principal")
        attrs = super().validate(attrs)
        object_type, object_id = attrs.get("object_type"), attrs.get("object_id")
        if object_type != "system" and object_of(object_type, object_id) is None:
            raise serializers.ValidationError({"object_id": [f"No {object_type.replace('_', ' ')} has this id."]})
        return attrs

    def create(self, validated_data):
        from ..permissions import object_of
        from ..services import grant_permission

        principal = validated_data.get("user") or validated_data.get("group")
        obj = object_of(validated_data["object_type"], validated_data.get("object_id"))
        return self.saved(grant_permission(user=self.user, principal=principal, role=validated_data["role"], obj=obj))


class QuotaSerializer(ValidatedModelSerializer):
    """Limits on what the VMs a user owns add up to (empty: unlimited); on a group, for each member."""

    url = SelfUrlField("quota")
    user = serializers.PrimaryKeyRelatedField(
        queryset=get_user_model().objects.all(), required=False, allow_null=True, help_text="Give a user or a group."
    )
    username = name_of("user.username")
    group_name = name_of("group.name")

    class Meta:
        model = Quota
        fields = (
            "id",
            "url",
            "user",
            "username",
            "group",
            "group_name",
            "max_vcpus",
            "max_memory_mib",
            "max_disk_gib",
            "created_at",
            "updated_at",
        )
        extra_kwargs = {"group": {"required": False, "allow_null": True}}
        create_only_fields = ("user", "group")

    def validate(self, attrs):
        if self.instance is None:
            one_principal(attrs, Quota, "quota_one_principal")
        return super().validate(attrs)

    def create(self, validated_data):
        from ..services import set_quota

        data = dict(validated_data)
        principal = data.pop("user", None) or data.pop("group", None)
        data.pop("group", None)
        limits = {name: data.get(name) for name in ("max_vcpus", "max_memory_mib", "max_disk_gib")}
        return self.saved(set_quota(user=self.user, principal=principal, **limits))

    def update(self, instance, validated_data):
        from ..services import update_quota

        return self.saved(update_quota(instance, user=self.user, **validated_data))


# Monitoring history ------------------------------------------------------------------------


class HistoryQuerySerializer(serializers.Serializer):
    """The query of a `/history/` series (inventory.history.series); the metrics the object
    has come in the context (`metrics`, and `nic_metrics` for a host's interfaces)."""

    metric = serializers.CharField(
        required=False,
        help_text="One metric or several, comma-separated: cpu, memory, net_rx, net_tx for hosts and VMs "
        "(net_rx and net_tx only with `nic`); free, total for storage domains. Default: all of them.",
    )
    since = serializers.DateTimeField(required=False, help_text="From this time (default: an hour ago).")
    until = serializers.DateTimeField(required=False, help_text="Up to this time (default: now).")

    def validate(self, attrs):
        known = self.context["nic_metrics"] if attrs.get("nic") else self.context["metrics"]
        names = [name.strip() for name in attrs.get("metric", "").split(",") if name.strip()] or list(known)
        unknown = sorted({name for name in names if name not in known})
        if unknown:
            raise serializers.ValidationError(
                {"metric": [f"Unknown metric(s) {', '.join(unknown)}; use {', '.join(known)}."]}
            )
        attrs["metrics"] = list(dict.fromkeys(names))
        since, until = attrs.get("since"), attrs.get("until")
        if since is not None and until is not None and until <= since:
            raise serializers.ValidationError({"until": ["Must be after since."]})
        return attrs


class HostHistoryQuerySerializer(HistoryQuerySerializer):
    nic = serializers.CharField(
        required=False, max_length=64, help_text="A network interface of the host: the traffic of that NIC."
    )


class HistorySerializer(serializers.Serializer):
    """A series: `points` are [time, value of each metric in `metrics` order] (null: unknown)."""

    id = serializers.UUIDField()
    since = serializers.DateTimeField()
    until = serializers.DateTimeField(allow_null=True)
    metrics = serializers.ListField(child=serializers.CharField())
    units = serializers.DictField(child=serializers.CharField())
    points = serializers.ListField(child=serializers.ListField(child=serializers.JSONField()))
