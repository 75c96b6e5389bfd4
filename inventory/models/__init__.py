from .audit import Event, Job, Step
from .base import OlvmModel
from .datacenter import Cluster, DataCenter, Host, name_validator

__all__ = ["Cluster", "DataCenter", "Event", "Host", "Job", "OlvmModel", "Step", "name_validator"]
