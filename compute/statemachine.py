"""The VM state machine: every allowed status change and every action's entry states.

Pure data and functions; the services consult it and the tests walk it exhaustively.
"""

from inventory.exceptions import ConflictError
from inventory.statemachine import StateMachine

from .choices import VmStatus as S

VM_STATE_MACHINE = StateMachine(
    "VM",
    S.values,
    {
        S.DOWN: {S.WAIT_FOR_LAUNCH, S.IMAGE_LOCKED, S.UP, S.PAUSED},  # up/paused: found running by a host
        S.IMAGE_LOCKED: {S.DOWN},
        S.WAIT_FOR_LAUNCH: {S.POWERING_UP, S.UP, S.PAUSED, S.DOWN, S.NOT_RESPONDING, S.UNKNOWN},
        S.POWERING_UP: {S.UP, S.PAUSED, S.POWERING_DOWN, S.REBOOT_IN_PROGRESS, S.DOWN, S.NOT_RESPONDING, S.UNKNOWN},
        S.UP: {
            S.POWERING_DOWN,
            S.REBOOT_IN_PROGRESS,
            S.PAUSED,
            S.SUSPENDED,
            S.MIGRATING,
            S.DOWN,
            S.NOT_RESPONDING,
            S.UNKNOWN,
        },
        S.POWERING_DOWN: {S.DOWN, S.UP, S.NOT_RESPONDING, S.UNKNOWN},
        S.REBOOT_IN_PROGRESS: {S.POWERING_UP, S.UP, S.DOWN, S.NOT_RESPONDING, S.UNKNOWN},
        S.PAUSED: {S.UP, S.POWERING_DOWN, S.SUSPENDED, S.MIGRATING, S.DOWN, S.NOT_RESPONDING, S.UNKNOWN},
        S.SUSPENDED: {S.WAIT_FOR_LAUNCH, S.DOWN},
        S.MIGRATING: {S.UP, S.PAUSED, S.DOWN, S.NOT_RESPONDING, S.UNKNOWN},
        S.NOT_RESPONDING: {S.UP, S.PAUSED, S.POWERING_DOWN, S.DOWN, S.UNKNOWN},
        S.UNKNOWN: {S.UP, S.PAUSED, S.NOT_RESPONDING, S.DOWN},
    },
)

# What each user action needs and the status it moves the VM to at once. Running
# statuses are where the VM has a qemu process on some host.
RUNNING = frozenset(
    {
        S.WAIT_FOR_LAUNCH,
        S.POWERING_UP,
        S.UP,
        S.POWERING_DOWN,
        S.REBOOT_IN_PROGRESS,
        S.PAUSED,
        S.MIGRATING,
        S.NOT_RESPONDING,
        S.UNKNOWN,
    }
)

ACTIONS: dict[str, tuple[frozenset[str], str]] = {
    "start": (frozenset({S.DOWN, S.SUSPENDED}), S.WAIT_FOR_LAUNCH),
    "shutdown": (frozenset({S.UP, S.POWERING_UP, S.PAUSED, S.REBOOT_IN_PROGRESS, S.NOT_RESPONDING}), S.POWERING_DOWN),
    "stop": (frozenset(RUNNING | {S.SUSPENDED}), S.DOWN),
    "reboot": (frozenset({S.UP, S.POWERING_UP}), S.REBOOT_IN_PROGRESS),
    "suspend": (frozenset({S.UP, S.PAUSED}), S.SUSPENDED),
    "resume": (frozenset({S.PAUSED, S.SUSPENDED}), S.UP),
    "migrate": (frozenset({S.UP}), S.MIGRATING),
    "cancel_migration": (frozenset({S.MIGRATING}), S.UP),
}
# A power off (stop) ends every running status at once; declare those moves too.
for _state in ACTIONS["stop"][0]:
    assert VM_STATE_MACHINE.allowed(_state, S.DOWN), _state


def check_action(action: str, status: str) -> str:
    """Return the status `action` leads to from `status`, or raise ConflictError why not."""
    sources, target = ACTIONS[action]
    if status not in sources:
        allowed = ", ".join(sorted(sources))
        raise ConflictError(
            f"Cannot {action} a VM whose status is '{status}' (allowed from: {allowed}).", code="illegal_state"
        )
    return target
