"""Monitoring history: CPU, memory and network of hosts and VMs, host NIC rates and the
free space of storage domains (written and pruned by inventory.history).

Rows name their object by id, not by foreign key, like the audit log: inserting thousands
of samples a second checks no constraint, and the history of a removed object simply ages
out. `resolution` says whether a row is one agent sample (kept an hour) or the average of a
5-minute bucket (kept 30 days).
"""

from django.db import models

from ..choices import SampleResolution


class Sample(models.Model):
    time = models.DateTimeField(help_text="When the agent took the sample (start of the bucket for averages).")
    resolution = models.PositiveSmallIntegerField(choices=SampleResolution.choices, default=SampleResolution.RAW)

    class Meta:
        abstract = True


class UsageSample(Sample):
    """CPU and memory use in percent, network traffic in bytes per second (null: unknown)."""

    cpu_pct = models.FloatField(null=True)
    mem_pct = models.FloatField(null=True)
    net_rx_bps = models.FloatField(null=True)
    net_tx_bps = models.FloatField(null=True)

    class Meta:
        abstract = True


class HostSample(UsageSample):
    host_id = models.UUIDField()

    class Meta:
        indexes = [
            models.Index(fields=["host_id", "time"], name="hostsample_host_time"),
            models.Index(fields=["resolution", "time"], name="hostsample_resolution_time"),
        ]


class VmSample(UsageSample):
    vm_id = models.UUIDField()

    class Meta:
        indexes = [
            models.Index(fields=["vm_id", "time"], name="vmsample_vm_time"),
            models.Index(fields=["resolution", "time"], name="vmsample_resolution_time"),
        ]


class HostNicSample(Sample):
    """Traffic of one network interface of a host, in bytes per second."""

    host_id = models.UUIDField()
    name = models.CharField(max_length=64)
    rx_bps = models.FloatField(null=True)
    tx_bps = models.FloatField(null=True)

    class Meta:
        indexes = [
            models.Index(fields=["host_id", "name", "time"], name="hostnicsample_host_nic_time"),
            models.Index(fields=["resolution", "time"], name="hostnicsample_resolution_time"),
        ]


class StorageDomainSample(Sample):
    storage_domain_id = models.UUIDField()
    total_bytes = models.BigIntegerField()
    free_bytes = models.BigIntegerField()

    class Meta:
        indexes = [
            models.Index(fields=["storage_domain_id", "time"], name="sdsample_sd_time"),
            models.Index(fields=["resolution", "time"], name="sdsample_resolution_time"),
        ]
