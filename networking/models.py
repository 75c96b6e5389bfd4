from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.urls import reverse

from inventory.models import OlvmModel, name_validator

from .choices import NicInterface
from .macs import int_to_mac, mac_to_int, normalize_mac


class MacPool(OlvmModel):
    """Ranges of MAC addresses handed to VM NICs; never the same one twice in a pool."""

    name = models.CharField(max_length=40, unique=True, validators=[name_validator])
    description = models.CharField(max_length=255, blank=True)
    allow_duplicates = models.BooleanField(default=False)
    ranges = models.JSONField(
        default=list, help_text='A list of {"from": "56:6f:..", "to": "56:6f:.."} inclusive ranges.'
    )
    # Next index to try, so allocation does not rescan from the start each time.
    cursor = models.BigIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["name"]

    def clean(self) -> None:
        ranges = self.ranges
        if not isinstance(ranges, list) or not ranges:
            raise ValidationError({"ranges": 'Give at least one range as {"from": MAC, "to": MAC}.'})
        parsed = []
        for number, item in enumerate(ranges, start=1):
            if not isinstance(item, dict) or set(item) != {"from", "to"}:
                raise ValidationError({"ranges": f"Range {number} must be an object with 'from' and 'to'."})
            try:
                start, end = mac_to_int(item["from"]), mac_to_int(item["to"])
            except ValueError as exc:
                raise ValidationError({"ranges": f"Range {number}: {exc}"}) from None
            if start > end:
                raise ValidationError({"ranges": f"Range {number} starts after it ends."})
            if start >> 40 & 1:
                raise ValidationError({"ranges": f"Range {number} holds multicast addresses."})
            parsed.append((start, end))
        parsed.sort()
        for (_, end1), (start2, _) in zip(parsed, parsed[1:], strict=False):
            if start2 <= end1:
                raise ValidationError({"ranges": "Ranges overlap."})
        self.ranges = [{"from": int_to_mac(s), "to": int_to_mac(e)} for s, e in parsed]

    @property
    def size(self) -> int:
        return sum(mac_to_int(r["to"]) - mac_to_int(r["from"]) + 1 for r in self.ranges)

    def mac_at(self, index: int) -> str:
        for r in self.ranges:
            start, end = mac_to_int(r["from"]), mac_to_int(r["to"])
            if index <= end - start:
                return int_to_mac(start + index)
            index -= end - start + 1
        raise IndexError(index)

    def contains(self, mac: str) -> bool:
        value = mac_to_int(mac)
        return any(mac_to_int(r["from"]) <= value <= mac_to_int(r["to"]) for r in self.ranges)


class LogicalNetwork(OlvmModel):
    data_center = models.ForeignKey("inventory.DataCenter", on_delete=models.PROTECT, related_name="networks")
    name = models.CharField(
        max_length=15, validators=[name_validator], help_text="At most 15 characters (a bridge name)."
    )
    description = models.CharField(max_length=255, blank=True)
    vlan_tag = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(0), MaxValueValidator(4094)]
    )
    mtu = models.PositiveIntegerField(
        default=0, validators=[MaxValueValidator(9000)], help_text="0 = the default (1500)."
    )
    vm_network = models.BooleanField(default=True, help_text="Carries VM traffic (has a bridge on hosts).")
    required = models.BooleanField(default=True, help_text="Hosts lacking it become non-operational.")
    is_management = models.BooleanField(default=False)
    is_migration = models.BooleanField(default=False)
    is_display = models.BooleanField(default=False)

    class Meta:
        ordering = ["name"]
        verbose_name = "logical network"
        constraints = [
            models.UniqueConstraint(fields=["data_center", "name"], name="network_name_unique_per_dc"),
            models.UniqueConstraint(
                fields=["data_center"], condition=models.Q(is_management=True), name="one_management_network_per_dc"
            ),
            models.UniqueConstraint(
                fields=["data_center", "vlan_tag"],
                condition=models.Q(vlan_tag__isnull=False),
                name="network_vlan_unique_per_dc",
            ),
        ]

    def clean(self) -> None:
        if self.mtu and self.mtu < 68:
            raise ValidationError({"mtu": "MTU must be 0 (default) or from 68 to 9000."})

    def get_absolute_url(self) -> str:
        return reverse("portals:network-detail", args=[self.pk])


class ClusterNetwork(models.Model):
    """A logical network attached to a cluster (oVirt's network_cluster)."""

    cluster = models.ForeignKey("inventory.Cluster", on_delete=models.CASCADE, related_name="network_attachments")
    network = models.ForeignKey(LogicalNetwork, on_delete=models.CASCADE, related_name="cluster_attachments")
    required = models.BooleanField(default=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["cluster", "network"], name="cluster_network_unique")]

    def __str__(self) -> str:
        return f"{self.network} @ {self.cluster}"


class VnicProfile(OlvmModel):
    network = models.ForeignKey(LogicalNetwork, on_delete=models.PROTECT, related_name="vnic_profiles")
    name = models.CharField(max_length=50, validators=[name_validator])
    description = models.CharField(max_length=255, blank=True)
    port_mirroring = models.BooleanField(default=False)
    pass_through = models.BooleanField(default=False)

    class Meta:
        ordering = ["network__name", "name"]
        verbose_name = "vNIC profile"
        constraints = [models.UniqueConstraint(fields=["network", "name"], name="vnic_profile_unique_per_network")]

    def clean(self) -> None:
        if self.port_mirroring and self.pass_through:
            raise ValidationError({"pass_through": "A pass-through profile cannot mirror ports."})
        if self.network_id and not self.network.vm_network:
            raise ValidationError({"network": "vNIC profiles need a VM network."})


class VmNic(OlvmModel):
    vm = models.ForeignKey("compute.VirtualMachine", on_delete=models.CASCADE, related_name="nics")
    name = models.CharField(max_length=50, validators=[name_validator])
    profile = models.ForeignKey(
        VnicProfile,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="nics",
        help_text="Empty: no network.",
    )
    mac_pool = models.ForeignKey(MacPool, on_delete=models.PROTECT, related_name="nics")
    mac = models.CharField(max_length=17, db_index=True)
    interface = models.CharField(max_length=16, choices=NicInterface.choices, default=NicInterface.VIRTIO)
    linked = models.BooleanField(default=True)
    plugged = models.BooleanField(default=True)

    class Meta:
        ordering = ["vm", "name"]
        verbose_name = "VM NIC"
        constraints = [
            models.UniqueConstraint(fields=["vm", "name"], name="nic_name_unique_per_vm"),
        ]
        indexes = [models.Index(fields=["mac_pool", "mac"], name="nic_pool_mac")]

    def clean(self) -> None:
        if self.mac:
            try:
                self.mac = normalize_mac(self.mac)
            except ValueError as exc:
                raise ValidationError({"mac": str(exc)}) from None
