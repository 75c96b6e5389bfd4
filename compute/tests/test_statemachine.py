"""Every VM status change and every action's entry states, exhaustively."""

import itertools

import pytest

from compute.choices import VmStatus
from compute.statemachine import ACTIONS, VM_STATE_MACHINE, check_action
from inventory.exceptions import ConflictError, InvalidTransition

PAIRS = list(itertools.product(VmStatus.values, repeat=2))


@pytest.mark.parametrize(("current", "target"), PAIRS)
def test_every_vm_transition_is_allowed_or_refused_naming_both_states(current, target):
    if VM_STATE_MACHINE.allowed(current, target):
        VM_STATE_MACHINE.check(current, target)
    else:
        with pytest.raises(InvalidTransition) as refused:
            VM_STATE_MACHINE.check(current, target)
        assert str(refused.value) == f"VM status cannot change from '{current}' to '{target}'."


def test_the_ovirt_lifecycle_is_allowed():
    path = [
        "down",
        "wait_for_launch",
        "powering_up",
        "up",
        "reboot_in_progress",
        "up",
        "powering_down",
        "down",
        "image_locked",
        "down",
        "wait_for_launch",
        "up",
        "suspended",
        "wait_for_launch",
        "up",
        "migrating",
        "up",
        "not_responding",
        "unknown",
        "down",
    ]
    for current, target in itertools.pairwise(path):
        assert VM_STATE_MACHINE.allowed(current, target), (current, target)


def test_some_moves_never_happen():
    assert not VM_STATE_MACHINE.allowed("down", "powering_down")
    assert not VM_STATE_MACHINE.allowed("image_locked", "up")
    assert not VM_STATE_MACHINE.allowed("suspended", "up")
    assert not VM_STATE_MACHINE.allowed("down", "migrating")


@pytest.mark.parametrize(("action", "status"), list(itertools.product(ACTIONS, VmStatus.values)))
def test_every_action_from_every_status(action, status):
    sources, target = ACTIONS[action]
    if status in sources:
        assert check_action(action, status) == target
    else:
        with pytest.raises(ConflictError) as refused:
            check_action(action, status)
        assert f"Cannot {action} a VM whose status is '{status}'" in refused.value.message


def test_action_targets_are_reachable_through_the_machine_or_a_transitional_state():
    assert check_action("start", "down") == "wait_for_launch"
    assert check_action("stop", "up") == "down"
    for status in ACTIONS["stop"][0]:
        assert VM_STATE_MACHINE.allowed(status, "down")


@pytest.mark.django_db
@pytest.mark.parametrize(("current", "target"), PAIRS)
def test_set_vm_status_applies_the_machine(current, target):
    from compute.services import set_vm_status
    from tests.factories import make_vm

    vm = make_vm(status=current)
    if current == target:
        assert set_vm_status(vm, target) is False
    elif VM_STATE_MACHINE.allowed(current, target):
        assert set_vm_status(vm, target) is True
        vm.refresh_from_db()
        assert vm.status == target
    else:
        with pytest.raises(InvalidTransition):
            set_vm_status(vm, target)
        vm.refresh_from_db()
        assert vm.status == current
