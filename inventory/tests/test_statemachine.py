"""Every host status change: each allowed one passes, every other is refused naming both states."""

import itertools

import pytest

from inventory.choices import HostStatus
from inventory.exceptions import InvalidTransition
from inventory.statemachine import HOST_STATE_MACHINE, StateMachine

PAIRS = list(itertools.product(HostStatus.values, repeat=2))


@pytest.mark.parametrize(("current", "target"), PAIRS)
def test_every_host_transition_is_declared_allowed_or_refused(current, target):
    if HOST_STATE_MACHINE.allowed(current, target):
        HOST_STATE_MACHINE.check(current, target)
    else:
        with pytest.raises(InvalidTransition) as refused:
            HOST_STATE_MACHINE.check(current, target)
        assert str(refused.value) == f"Host status cannot change from '{current}' to '{target}'."


def test_host_lifecycle_paths_are_allowed():
    path = [
        "installing",
        "up",
        "preparing_for_maintenance",
        "maintenance",
        "connecting",
        "up",
        "non_responsive",
        "connecting",
        "up",
    ]
    for current, target in itertools.pairwise(path):
        assert HOST_STATE_MACHINE.allowed(current, target), (current, target)


def test_host_cannot_skip_maintenance_preparation_from_non_responsive_to_preparing():
    assert not HOST_STATE_MACHINE.allowed("non_responsive", "preparing_for_maintenance")
    assert not HOST_STATE_MACHINE.allowed("install_failed", "up")


def test_a_machine_naming_unknown_states_is_rejected():
    with pytest.raises(ValueError, match="unknown states"):
        StateMachine("X", ["a"], {"a": {"b"}})
    with pytest.raises(ValueError, match="no transitions declared"):
        StateMachine("X", ["a", "b"], {"a": {"b"}})


@pytest.mark.django_db
@pytest.mark.parametrize(("current", "target"), PAIRS)
def test_set_host_status_applies_the_machine(current, target):
    from inventory.services import set_host_status
    from tests.factories import make_host

    host = make_host(status=current)
    if current == target:
        assert set_host_status(host, target) is False
    elif HOST_STATE_MACHINE.allowed(current, target):
        assert set_host_status(host, target) is True
        host.refresh_from_db()
        assert host.status == target
    else:
        with pytest.raises(InvalidTransition, match=f"from '{current}' to '{target}'"):
            set_host_status(host, target)
        host.refresh_from_db()
        assert host.status == current
