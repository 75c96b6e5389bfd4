"""Errors a verb can end with, each with its JSON-RPC error code.

The codes below -32000 are JSON-RPC's own; -32000..-32006 are this agent's application
errors (the JSON-RPC "server error" range). `data.kind` repeats the code as a word so a
caller can branch on it without a table, and `data.transient` says whether retrying the
same call later may succeed.
"""

from __future__ import annotations

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603


class AgentFailure(Exception):
    """A verb failed for a reason the caller should read (a hypervisor or storage error)."""

    code = -32000
    kind = "failed"
    transient = False

    def __init__(self, message: str, **data):
        super().__init__(message)
        self.message = message
        self.data = data

    def error_object(self) -> dict:
        data = {"kind": self.kind, "transient": self.transient, **self.data}
        return {"code": self.code, "message": self.message, "data": data}


class NotFound(AgentFailure):
    """No such VM, snapshot, image or storage domain on this host."""

    code = -32001
    kind = "not_found"


class Conflict(AgentFailure):
    """The object exists but is in the wrong state for the verb (already running, not paused...)."""

    code = -32002
    kind = "conflict"


class Timeout(AgentFailure):
    """The verb did not finish in its time; it may still complete on the host."""

    code = -32003
    kind = "timeout"
    transient = True


class Unsupported(AgentFailure):
    """The hypervisor (or this host) cannot do it: no such libvirt API, no qemu-img..."""

    code = -32004
    kind = "unsupported"


class Busy(AgentFailure):
    """Too many calls in flight on this agent; retry later."""

    code = -32005
    kind = "busy"
    transient = True


class Unavailable(AgentFailure):
    """The hypervisor behind the agent (libvirtd) cannot be reached."""

    code = -32006
    kind = "unavailable"
    transient = True


class InvalidParams(AgentFailure):
    """A parameter is missing or wrong; `field` names it (`spec.disks[0].id`)."""

    code = INVALID_PARAMS
    kind = "invalid_params"

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}" if field else message, field=field)
        self.field = field
