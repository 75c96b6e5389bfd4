"""Outgoing live migrations: what both drivers share (VDSM-like: start, poll, cancel).

`migrate_vm` starts a migration in the background and returns at once; `migration_status`
reads the `MigrationRecord` the driver keeps per VM (finished ones for `KEEP_FINISHED`
seconds); `migration_cancel` aborts it. `MigrationPlan` is the policy as plain logic over
the job figures the driver polls, so it is tested without a hypervisor:

- minimal_downtime: the allowed downtime starts at a quarter of the cap (default 500 ms)
  and rises a step each time the guest starts another memory iteration or the remaining
  data stops shrinking, up to the cap (VDSM's downtime steps);
- post_copy: the same steps, and when the migration stalls the driver switches to
  post-copy (the guest then runs on the destination and pulls its missing pages);
- suspend_workload: qemu's auto-converge throttles the guest's vCPUs; steps up to 5000 ms;
- legacy: one fixed downtime (default 500 ms).

Every policy aborts a migration that made no progress for `NO_PROGRESS_TIMEOUT` seconds or
ran longer than its `timeout`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

POLICIES = ("minimal_downtime", "post_copy", "suspend_workload", "legacy")
DEFAULT_MAX_DOWNTIME_MS = {"minimal_downtime": 500, "post_copy": 500, "suspend_workload": 5000, "legacy": 500}
DOWNTIME_STEPS = 5
STALL_POLLS = 8  # polls without the remaining data shrinking: the migration stalls
NO_PROGRESS_TIMEOUT = 150.0  # seconds without any progress: abort (VDSM: 240)
POLL_INTERVAL = 0.3
KEEP_FINISHED = 600.0  # seconds a finished migration stays readable
STATES = ("none", "running", "completed", "failed", "cancelled")


def downtime_steps(cap_ms: int, steps: int = DOWNTIME_STEPS) -> list[int]:
    """From a quarter of the cap up to the cap, evenly: 500 -> [125, 218, 312, 406, 500]."""
    first = max(1, cap_ms // 4)
    if steps <= 1 or first >= cap_ms:
        return [cap_ms]
    return sorted({first + (cap_ms - first) * i // (steps - 1) for i in range(steps)})


class MigrationPlan:
    """What to do as the migration goes: `observe(stats, now)` returns actions,
    ("downtime", ms), ("post_copy",) or ("abort", reason)."""

    def __init__(self, policy: str, max_downtime_ms: int | None, timeout: float, started: float):
        cap = max_downtime_ms or DEFAULT_MAX_DOWNTIME_MS[policy]
        self.policy = policy
        self.steps = [cap] if policy == "legacy" else downtime_steps(cap)
        self.step = 0
        self.timeout = timeout
        self.started = started
        self.last_progress = started
        self.best_remaining: int | None = None
        self.iteration = 0
        self.stalled_polls = 0
        self.post_copy = False

    @property
    def downtime_ms(self) -> int:
        return self.steps[self.step]

    def _step_up(self, actions: list) -> None:
        if self.step + 1 < len(self.steps):
            self.step += 1
            actions.append(("downtime", self.steps[self.step]))

    def observe(self, stats: dict, now: float) -> list[tuple]:
        actions: list[tuple] = []
        if now - self.started > self.timeout:
            return [("abort", f"the migration did not finish within its timeout of {self.timeout:g} s")]
        remaining = stats.get("data_remaining")
        total = stats.get("data_total") or 0
        iteration = stats.get("memory_iteration") or 0
        progressed = False
        if total and remaining is not None and (self.best_remaining is None or remaining < self.best_remaining):
            self.best_remaining = remaining
            progressed = True
        if iteration > self.iteration:
            if self.iteration >= 1 and not self.post_copy:
                self._step_up(actions)  # another pass over memory: the guest dirties faster than we send
            self.iteration = iteration
            progressed = True
        if progressed:
            self.last_progress = now
            self.stalled_polls = 0
        elif total:
            self.stalled_polls += 1
        if now - self.last_progress > NO_PROGRESS_TIMEOUT:
            return [("abort", f"the migration made no progress for {NO_PROGRESS_TIMEOUT:g} s")]
        if self.stalled_polls >= STALL_POLLS and not self.post_copy:
            self.stalled_polls = 0
            if self.policy == "post_copy" and iteration >= 1:
                self.post_copy = True
                actions.append(("post_copy",))
            else:
                self._step_up(actions)
        return actions


@dataclass
class MigrationRecord:
    """One outgoing migration of a VM, as `migration_status` reports it."""

    vm_id: str
    destination: str
    policy: str
    started: float = field(default_factory=time.monotonic)
    state: str = "running"
    finished: float | None = None
    stats: dict = field(default_factory=dict)
    max_downtime_ms: int | None = None
    post_copy: bool = False
    downtime_ms: int | None = None
    job_time_ms: int | None = None
    error: str | None = None
    cancel_requested: bool = False
    abort_reason: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event)

    def finish(self, state: str, error: str | None = None) -> None:
        self.state = state
        self.error = error
        self.finished = time.monotonic()

    def status(self) -> dict:
        stats = self.stats
        total = stats.get("data_total") or 0
        remaining = stats.get("data_remaining")
        if self.state == "completed":
            progress = 100
        elif total and remaining is not None:
            progress = max(0, min(99, int(100 * (total - remaining) / total)))
        else:
            progress = 0
        end = self.finished if self.finished is not None else time.monotonic()
        result = {
            "vm_id": self.vm_id,
            "state": self.state,
            "progress": progress,
            "elapsed_ms": int((end - self.started) * 1000),
            "data_total": total,
            "data_processed": stats.get("data_processed") or 0,
            "data_remaining": remaining or 0,
            "memory_bps": stats.get("memory_bps"),
            "iteration": stats.get("memory_iteration"),
            "max_downtime_ms": self.max_downtime_ms,
            "post_copy": self.post_copy,
            "downtime_ms": self.downtime_ms,
            "job_time_ms": self.job_time_ms,
            "destination": self.destination,
            "policy": self.policy,
        }
        if self.error:
            result["error"] = self.error
        return result


class MigrationBook:
    """The driver's records, one per VM, finished ones forgotten after `keep` seconds."""

    def __init__(self, keep: float = KEEP_FINISHED):
        self.keep = keep
        self._records: dict[str, MigrationRecord] = {}
        self._lock = threading.Lock()

    def get(self, vm_id: str) -> MigrationRecord | None:
        with self._lock:
            self._expire()
            return self._records.get(vm_id)

    def start(self, record: MigrationRecord) -> bool:
        """Keep the record unless one of the VM is running (False then)."""
        with self._lock:
            current = self._records.get(record.vm_id)
            if current is not None and current.state == "running":
                return False
            self._records[record.vm_id] = record
            return True

    def _expire(self) -> None:
        now = time.monotonic()
        for vm_id in [v for v, r in self._records.items() if r.finished is not None and now - r.finished > self.keep]:
            del self._records[vm_id]


def none_status(vm_id: str) -> dict:
    """No migration of the VM is known here: the same keys, all empty."""
    return {
        "vm_id": vm_id,
        "state": "none",
        "progress": 0,
        "elapsed_ms": 0,
        "data_total": 0,
        "data_processed": 0,
        "data_remaining": 0,
        "memory_bps": None,
        "iteration": None,
        "max_downtime_ms": None,
        "post_copy": False,
        "downtime_ms": None,
        "job_time_ms": None,
        "destination": None,
        "policy": None,
    }
