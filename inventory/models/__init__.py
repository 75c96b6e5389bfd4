from .audit import Event, Job, Step
from .base import OlvmModel
from .datacenter import Cluster, DataCenter, Host, name_validator
from .history import HostNicSample, HostSample, StorageDomainSample, VmSample
from .permissions import Permission, Quota, Role, RoleAction

__all__ = [
    "Cluster",
    "DataCenter",
    "Event",
    "Host",
    "HostNicSample",
    "HostSample",
    "Job",
    "OlvmModel",
    "Permission",
    "Quota",
    "Role",
    "RoleAction",
    "Step",
    "StorageDomainSample",
    "VmSample",
    "name_validator",
]
