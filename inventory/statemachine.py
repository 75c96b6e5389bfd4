"""State machines as plain data: the allowed transitions of a status field, in one place.

Pure code, no database: `StateMachine.check(current, target)` raises
`InvalidTransition` naming both states when the move is not allowed.
"""

from collections.abc import Iterable, Mapping

from .choices import HostStatus
from .exceptions import InvalidTransition


class StateMachine:
    def __init__(self, kind: str, states: Iterable[str], transitions: Mapping[str, Iterable[str]]):
        self.kind = kind
        self.states = frozenset(states)
        self.transitions = {state: frozenset(targets) for state, targets in transitions.items()}
        unknown = (set(self.transitions) | {t for ts in self.transitions.values() for t in ts}) - self.states
        if unknown:
            raise ValueError(f"{kind}: transitions name unknown states {sorted(unknown)}")
        missing = self.states - set(self.transitions)
        if missing:
            raise ValueError(f"{kind}: no transitions declared for {sorted(missing)}")

    def allowed(self, current: str, target: str) -> bool:
        return target in self.transitions.get(current, ())

    def check(self, current: str, target: str) -> None:
        if not self.allowed(current, target):
            raise InvalidTransition(self.kind, current, target)

    def targets(self, current: str) -> frozenset[str]:
        return self.transitions.get(current, frozenset())


H = HostStatus

HOST_STATE_MACHINE = StateMachine(
    "Host",
    H.values,
    {
        H.INSTALLING: {H.UP, H.INSTALL_FAILED, H.NON_OPERATIONAL, H.MAINTENANCE},
        H.INSTALL_FAILED: {H.INSTALLING, H.MAINTENANCE},
        H.CONNECTING: {H.UP, H.NON_RESPONSIVE, H.NON_OPERATIONAL, H.MAINTENANCE, H.PREPARING_FOR_MAINTENANCE, H.DOWN},
        H.UP: {H.CONNECTING, H.PREPARING_FOR_MAINTENANCE, H.MAINTENANCE, H.NON_OPERATIONAL, H.NON_RESPONSIVE, H.DOWN},
        H.PREPARING_FOR_MAINTENANCE: {H.MAINTENANCE, H.UP, H.CONNECTING, H.NON_RESPONSIVE, H.NON_OPERATIONAL},
        H.MAINTENANCE: {H.INSTALLING, H.CONNECTING, H.UP, H.DOWN},
        H.NON_RESPONSIVE: {H.CONNECTING, H.UP, H.MAINTENANCE, H.NON_OPERATIONAL, H.INSTALLING, H.DOWN},
        H.NON_OPERATIONAL: {H.CONNECTING, H.UP, H.MAINTENANCE, H.NON_RESPONSIVE, H.INSTALLING, H.DOWN},
        H.DOWN: {H.CONNECTING, H.INSTALLING, H.MAINTENANCE, H.UP},
    },
)
