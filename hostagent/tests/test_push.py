"""The agent's push (docs/ingest.md) against a real IngestServer, with the sim driver."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from hostagent.agent import push
from hostagent.agent.config import AgentConfig, ConfigError, config_from_dict
from hostagent.agent.drivers import EventSink
from hostagent.agent.drivers.libvirt_driver import LibvirtDriver
from hostagent.agent.drivers.sim_driver import SimDriver
from hostagent.agent.push import Pusher, PushScheduler
from hostagent.agent.testing import make_ingest_pki, running_ingest_server
from hostagent.agent.verbs import VERBS
from hostagent.ingest_server import IngestError, validate_batch

REPO = Path(__file__).resolve().parents[2]
SHORT = {"heartbeat_interval": 0.2, "stats_interval": 0.3, "guest_info_interval": 0.3}
WAIT = 5.0  # a correctness bound, not a benchmark


class Engine:
    """The engine's side: checks every batch like inventory.ingest does, records it, and
    answers 200 with `intervals`, or what `answer(body)` returns when that is not None."""

    def __init__(self, intervals: dict):
        self.intervals = intervals
        self.requests: list[tuple[str, dict, int]] = []  # (host_cn, body, status answered)
        self.invalid: list[IngestError] = []
        self.answer = None
        self.cond = threading.Condition()

    def __call__(self, host_cn: str, body: dict):
        try:
            validate_batch(body)
        except IngestError as exc:
            self.invalid.append(exc)
            raise
        answer = self.answer(body) if self.answer else None
        status, reply = answer or (200, {"ok": True, "accepted": len(body["messages"]), **self.intervals})
        with self.cond:
            self.requests.append((host_cn, body, status))
            self.cond.notify_all()
        return status, reply

    def wait_for(self, predicate, timeout: float = WAIT):
        """The first (host_cn, body, status) from now on, or already seen, for which predicate holds."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for request in self.requests:
                    if predicate(request):
                        return request
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no such request within {timeout}s; got {self.kinds()}")
                self.cond.wait(left)

    def kinds(self) -> list[list[str]]:
        return [[m["kind"] for m in body["messages"]] for _, body, _ in self.requests]

    def messages(self, kind: str, *, status: int | None = 200) -> list[dict]:
        with self.cond:
            return [
                m
                for _, body, answered in self.requests
                if status is None or answered == status
                for m in body["messages"]
                if m["kind"] == kind
            ]


def has(kind: str, answered: int | None = 200, **fields):
    """A predicate for Engine.wait_for: a request answered `answered` (None: any) with a
    message of `kind` whose fields have these values."""

    def predicate(request) -> bool:
        _, body, status = request
        return (answered is None or status == answered) and any(
            m["kind"] == kind and all(m.get(k) == v for k, v in fields.items()) for m in body["messages"]
        )

    return predicate


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_ingest_pki(tmp_path_factory.mktemp("pki"))


def make_config(pki, tmp_path, port: int, **overrides) -> AgentConfig:
    values = {
        "driver": "sim",
        "host_name": "push-h1",
        "storage_roots": [str(tmp_path)],
        "cert_file": pki.host["cert_file"],
        "key_file": pki.host["key_file"],
        "ca_file": pki.host["ca_file"],
        "engine_url": f"https://127.0.0.1:{port}/ingest",
        **SHORT,
        "push_timeout": 5.0,
        **overrides,
    }
    return config_from_dict(values)


def make_vm(driver, name: str = "vm1") -> dict:
    spec = VERBS["create_vm"].validate({"spec": {"id": str(uuid.uuid4()), "name": name, "vcpus": 1, "memory_mib": 64}})
    driver.create_vm(**spec)
    return spec["spec"]


@pytest.fixture
def engine():
    return Engine(SHORT)


@pytest.fixture
def server(engine, pki):
    with running_ingest_server(engine, pki) as server:
        yield server
    assert engine.invalid == []


@pytest.fixture
def driver(pki, tmp_path, server):
    driver = SimDriver(make_config(pki, tmp_path, server.ports[0]))
    yield driver
    driver.close()


@pytest.fixture(params=["threads", "scheduler"])
def scheduler(request):
    """None: each pusher runs its own threads (`serve`); else the PushScheduler the simulator
    shares between its hosts. The behaviour on the wire is the same."""
    if request.param == "threads":
        yield None
        return
    scheduler = PushScheduler(send_workers=2, collect_workers=2)
    yield scheduler
    scheduler.stop()


def driven(pusher: Pusher, scheduler: PushScheduler | None) -> Pusher:
    """`pusher` whose start() uses `scheduler` when there is one."""
    if scheduler is not None:
        pusher.start = lambda: Pusher.start(pusher, scheduler)
    return pusher


@pytest.fixture
def pusher(driver, scheduler):
    pusher = driven(Pusher(driver.config, driver), scheduler)
    yield pusher
    pusher.stop()


def test_the_first_request_carries_a_heartbeat_and_the_full_vm_report(engine, pki, driver, pusher):
    vm = make_vm(driver)

    pusher.start()
    host_cn, first, status = engine.wait_for(lambda request: True)

    assert (host_cn, status) == (pki.host_id, 200)
    assert first["agent"] == {
        "version": "0.1.0",
        "driver": "sim",
        "simulated": True,
        "boot_id": pusher.agent["boot_id"],
        "hostname": "push-h1",
    }
    assert re.fullmatch(r"[0-9a-f]{32}", first["agent"]["boot_id"])
    assert first["seq"] == 1
    heartbeat, report = first["messages"][:2]
    assert heartbeat == {"kind": "heartbeat", "at": heartbeat["at"]}
    assert report == {
        "kind": "vm_report",
        "at": report["at"],
        "full": True,
        "vms": [{"id": vm["id"], "name": "vm1", "status": "up", "olvm": True}],
    }
    assert abs(heartbeat["at"] - time.time()) < WAIT


def test_seq_grows_by_one_per_request_within_one_boot_id(engine, pusher):
    pusher.start()
    engine.wait_for(lambda request: request[1]["seq"] >= 4)

    with engine.cond:
        bodies = [body for _, body, _ in engine.requests]
    assert [b["seq"] for b in bodies] == list(range(1, len(bodies) + 1))
    assert {b["agent"]["boot_id"] for b in bodies} == {pusher.agent["boot_id"]}


def test_a_lifecycle_event_is_pushed_at_once(engine, driver, pusher):
    vm = make_vm(driver)
    pusher.start()
    engine.wait_for(has("vm_report"))

    driver.pause_vm(vm["id"])
    _, body, _ = engine.wait_for(has("vm_event", vm_id=vm["id"], status="paused"), timeout=1.0)

    [event] = [m for m in body["messages"] if m["kind"] == "vm_event"]
    assert event == {
        "kind": "vm_event",
        "at": event["at"],
        "vm_id": vm["id"],
        "name": "vm1",
        "status": "paused",
        "event": "suspended",
        "detail": "paused",
    }


def test_stats_and_guest_info_arrive(engine, driver, pusher):
    vm = make_vm(driver)

    pusher.start()
    engine.wait_for(has("stats"))
    engine.wait_for(has("guest_info", vm_id=vm["id"]))

    stats = engine.messages("stats")[0]
    assert stats["host"].keys() >= {"cpu", "memory", "vms_running"}
    assert [(s["vm_id"], s["name"], s["status"]) for s in stats["vms"]] == [(vm["id"], "vm1", "up")]
    info = engine.messages("guest_info")[0]["info"]
    assert (info["vm_id"], info["guest_agent"], info["hostname"]) == (vm["id"], "ok", "vm1")


def test_no_guest_info_for_a_vm_that_is_not_running_or_whose_guest_agent_does_not_answer(engine, driver, pusher):
    paused, silent, running = make_vm(driver, "paused"), make_vm(driver, "silent"), make_vm(driver, "running")
    driver.pause_vm(paused["id"])
    answering = driver.guest_info
    driver.guest_info = lambda vm_id: (
        {"vm_id": vm_id, "guest_agent": "unavailable"} if vm_id == silent["id"] else answering(vm_id)
    )

    pusher.start()
    engine.wait_for(has("guest_info", vm_id=running["id"]))
    engine.wait_for(has("heartbeat"))
    time.sleep(2 * SHORT["guest_info_interval"])

    assert {m["vm_id"] for m in engine.messages("guest_info")} == {running["id"]}


@pytest.mark.parametrize("status", [503, 403])
def test_back_off_then_recovery_without_losing_the_event(engine, driver, pusher, status):
    vm = make_vm(driver)
    pusher.start()
    engine.wait_for(has("vm_report"))
    engine.answer = lambda body: (status, {"error": "The engine cannot store reports right now; retry."})

    driver.pause_vm(vm["id"])
    engine.wait_for(has("vm_event", answered=status, vm_id=vm["id"]))
    time.sleep(1.2)
    with engine.cond:
        failed = [body for _, body, answered in engine.requests if answered == status]
        failed = failed[next(i for i, b in enumerate(failed) if has("vm_event", answered=None)((None, b, None))) :]
    error = pusher.last_error
    engine.answer = None
    _, delivered, _ = engine.wait_for(has("vm_event", vm_id=vm["id"]))

    # Back-off (0.5 s, then 1 s): not one request per heartbeat (0.2 s). Each retry has the event.
    assert 2 <= len(failed) <= 3
    assert all(any(m["kind"] == "vm_event" for m in body["messages"]) for body in failed)
    assert error == f"the engine answered HTTP {status}: The engine cannot store reports right now; retry."
    assert [m["status"] for m in delivered["messages"] if m["kind"] == "vm_event"] == ["paused"]
    # The changed VM list was reported at the next tick, and kept with the event; something
    # was always waiting to be sent, so no bare heartbeat was queued meanwhile.
    kinds = [m["kind"] for m in delivered["messages"]]
    assert "vm_report" in kinds and "heartbeat" not in kinds
    # The engine answered again after errors: it gets a full report once more.
    engine.wait_for(lambda request: request[1]["seq"] > delivered["seq"] and has("vm_report")(request))


def test_a_400_drops_the_batch(engine, driver, pusher, caplog):
    vm = make_vm(driver)
    pusher.start()
    engine.wait_for(has("vm_report"))
    engine.answer = lambda body: (
        (400, {"error": "messages[0].name is not good", "field": "messages[0].name"})
        if any(m["kind"] == "vm_event" for m in body["messages"])
        else None
    )

    driver.pause_vm(vm["id"])
    engine.wait_for(has("vm_event", answered=400))
    refused_at = len(engine.requests)
    engine.wait_for(lambda request: len(engine.requests) >= refused_at + 3)

    assert engine.messages("vm_event", status=None) == engine.messages("vm_event", status=400)
    assert len(engine.messages("vm_event", status=400)) == 1
    assert pusher.dropped >= 1
    assert "the engine refused" in caplog.text and "(field messages[0].name); dropped" in caplog.text


def test_the_intervals_of_the_engines_answer_are_adopted(engine, pki, tmp_path, server, scheduler):
    driver = SimDriver(make_config(pki, tmp_path, server.ports[0], heartbeat_interval=60.0, stats_interval=60.0))
    pusher = driven(Pusher(driver.config, driver), scheduler)
    # Stats less often than heartbeats: most heartbeat ticks have nothing else to send.
    engine.intervals = {"heartbeat_interval": 0.2, "stats_interval": 0.5, "guest_info_interval": 30}
    try:
        pusher.start()
        engine.wait_for(lambda request: len(engine.messages("heartbeat")) >= 4)
        engine.wait_for(lambda request: len(engine.messages("stats")) >= 3)
    finally:
        pusher.stop()

    assert pusher.intervals == {"heartbeat_interval": 0.2, "stats_interval": 0.5, "guest_info_interval": 30.0}


@pytest.fixture
def pushing(engine, pki, tmp_path, server, scheduler):
    """make(**intervals): a sim driver and its (not started) pusher with these intervals,
    which the engine's answers keep."""
    made = []

    def make(**intervals):
        engine.intervals = {**SHORT, **intervals}
        driver = SimDriver(make_config(pki, tmp_path, server.ports[0], **engine.intervals))
        pusher = driven(Pusher(driver.config, driver), scheduler)
        made.append((driver, pusher))
        return driver, pusher

    yield make
    for driver, pusher in made:
        pusher.stop()
        driver.close()


def guest_infos(engine, vm_id: str) -> list[dict]:
    return [m for m in engine.messages("guest_info") if m["vm_id"] == vm_id]


# Any push is a heartbeat ---------------------------------------------------------------------------


def test_no_bare_heartbeat_when_stats_go_more_often_than_heartbeats(engine, pushing):
    driver, pusher = pushing(heartbeat_interval=0.4, stats_interval=0.15, guest_info_interval=60.0)
    make_vm(driver)

    pusher.start()
    engine.wait_for(lambda request: len(engine.messages("stats")) >= 12)  # about 1.8 s: four heartbeat ticks

    assert len(engine.messages("heartbeat")) == 1  # the hello, nothing more
    assert engine.kinds()[0][:2] == ["heartbeat", "vm_report"]


def test_a_host_with_nothing_else_to_say_still_heartbeats_every_interval(engine, pushing):
    driver, pusher = pushing(heartbeat_interval=0.2, stats_interval=60.0, guest_info_interval=60.0)

    pusher.start()
    engine.wait_for(lambda request: len(engine.messages("heartbeat")) >= 6)

    with engine.cond:
        sent = [body["sent_at"] for _, body, _ in engine.requests]
    assert max(b - a for a, b in zip(sent, sent[1:], strict=False)) < 1.0  # not one per report refresh
    assert len(engine.messages("vm_report")) == 1  # nothing changed, the refresh is 10 s away


# Full reports ------------------------------------------------------------------------------------


def test_an_unchanged_host_reports_in_full_once_per_refresh(engine, driver, pusher, monkeypatch):
    monkeypatch.setattr(push, "REPORT_REFRESH", 1.0)
    make_vm(driver)

    pusher.start()
    engine.wait_for(lambda request: len(engine.messages("vm_report")) >= 3)

    reports = engine.messages("vm_report")
    gaps = [b["at"] - a["at"] for a, b in zip(reports, reports[1:], strict=False)]
    heartbeats = len(engine.messages("heartbeat"))
    assert all(0.9 <= gap < 2.0 for gap in gaps), gaps  # every 1 s at the tick reaching it, not every 0.2 s
    assert heartbeats >= 2  # the ticks between reports heartbeat when nothing else went


def test_a_changed_vm_list_is_reported_at_the_next_tick(engine, driver, pusher, monkeypatch):
    monkeypatch.setattr(push, "REPORT_REFRESH", 60.0)
    vm = make_vm(driver)
    pusher.start()
    engine.wait_for(has("vm_report"))
    driver.events.unsubscribe(pusher.event)  # no lifecycle event: the VM list alone tells

    driver.pause_vm(vm["id"])
    changed = time.monotonic()
    engine.wait_for(
        lambda request: any(
            m["kind"] == "vm_report" and m["vms"][0]["status"] == "paused" for m in request[1]["messages"]
        )
    )
    took = time.monotonic() - changed
    time.sleep(0.6)  # three more ticks: the list is unchanged again

    assert took < 1.0  # the next 0.2 s tick, not the 60 s refresh
    assert [r["vms"][0]["status"] for r in engine.messages("vm_report")] == ["up", "paused"]
    assert engine.messages("vm_event") == []


def test_after_errors_the_engine_gets_a_full_report_and_the_guest_information_again(
    engine, driver, pusher, monkeypatch
):
    monkeypatch.setattr(push, "REPORT_REFRESH", 60.0)
    vm = make_vm(driver)
    pusher.start()
    engine.wait_for(has("vm_report"))
    engine.wait_for(has("guest_info", vm_id=vm["id"]))
    engine.answer = lambda body: (503, {"error": "The engine cannot store reports right now; retry."})
    engine.wait_for(lambda request: request[2] == 503)
    recovered = len(engine.requests)

    engine.answer = None
    engine.wait_for(lambda request: len(engine.messages("vm_report")) >= 2, timeout=WAIT + 2)
    engine.wait_for(lambda request: len(guest_infos(engine, vm["id"])) >= 2)

    with engine.cond:
        later = [body for _, body, _ in engine.requests[recovered:]]
    assert any(m["kind"] == "vm_report" for body in later for m in body["messages"])
    assert [r["vms"][0]["status"] for r in engine.messages("vm_report")] == ["up", "up"]


def test_a_restarted_listener_gets_a_full_report_again(engine, pki, tmp_path, scheduler, monkeypatch):
    monkeypatch.setattr(push, "REPORT_REFRESH", 60.0)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    driver = SimDriver(make_config(pki, tmp_path, port))
    pusher = driven(Pusher(driver.config, driver), scheduler)
    try:
        with running_ingest_server(engine, pki, listen=[("127.0.0.1", port)]):
            pusher.start()
            engine.wait_for(has("vm_report"))
            engine.wait_for(lambda request: len(engine.requests) >= 3)
        last_seq = engine.requests[-1][1]["seq"]
        with running_ingest_server(engine, pki, listen=[("127.0.0.1", port)]):
            engine.wait_for(lambda request: request[1]["seq"] > last_seq and has("vm_report")(request))
    finally:
        pusher.stop()
        driver.close()

    assert len(engine.messages("vm_report")) == 2


def test_what_a_full_queue_pushes_out_is_said_again(driver, monkeypatch):
    pusher = Pusher(driver.config, driver)  # not started: collections are run by hand, nothing is sent
    make_vm(driver, "first")
    make_vm(driver, "second")
    pusher.collect("heartbeat_interval")
    pusher.collect("guest_info_interval")
    pusher.collect("guest_info_interval")  # unchanged: not again
    assert pusher.queued() == ["heartbeat", "vm_report", "guest_info", "guest_info"]

    monkeypatch.setattr(push, "MAX_QUEUE", 3)
    other = str(uuid.uuid4())  # events of another VM: they do not touch the guest information of these
    for _ in range(3):  # out go both guest information, then the heartbeat, then the report
        pusher.event("vm_event", {"vm_id": other, "name": "x", "status": "down", "event": "stopped", "detail": ""})
    assert pusher.queued() == ["vm_event"] * 3
    monkeypatch.setattr(push, "MAX_QUEUE", 5_000)

    pusher.collect("guest_info_interval")
    pusher.collect("heartbeat_interval")  # the VM list is unchanged and the refresh 10 s away
    assert pusher.queued() == ["vm_event"] * 3 + ["guest_info", "guest_info", "vm_report"]
    pusher.stop()


# Guest information -------------------------------------------------------------------------------


def test_unchanged_guest_information_is_not_sent_again(engine, driver, pusher):
    vm = make_vm(driver)

    pusher.start()
    engine.wait_for(has("guest_info", vm_id=vm["id"]))
    stats = len(engine.messages("stats"))
    engine.wait_for(lambda request: len(engine.messages("stats")) >= stats + 4)  # over 1 s: four guest runs

    assert len(guest_infos(engine, vm["id"])) == 1


def test_changed_guest_information_is_sent(engine, driver, pusher):
    vm = make_vm(driver)
    answering, hostname = driver.guest_info, {"now": "vm1"}
    driver.guest_info = lambda vm_id: {**answering(vm_id), "hostname": hostname["now"]}

    pusher.start()
    engine.wait_for(has("guest_info", vm_id=vm["id"]))
    hostname["now"] = "renamed"
    engine.wait_for(lambda request: any(m["info"]["hostname"] == "renamed" for m in guest_infos(engine, vm["id"])))
    stats = len(engine.messages("stats"))
    engine.wait_for(lambda request: len(engine.messages("stats")) >= stats + 3)

    assert [m["info"]["hostname"] for m in guest_infos(engine, vm["id"])] == ["vm1", "renamed"]


def test_a_lifecycle_event_makes_the_guest_information_of_its_vm_go_again(engine, driver, pusher):
    vm, other = make_vm(driver, "vm1"), make_vm(driver, "vm2")
    pusher.start()
    engine.wait_for(has("guest_info", vm_id=vm["id"]))
    engine.wait_for(has("guest_info", vm_id=other["id"]))

    # Its guest agent restarted with the VM (a reset): the VM stays up, its facts are the same.
    pusher.event("vm_event", {"vm_id": vm["id"], "name": "vm1", "status": "up", "event": "started", "detail": "booted"})
    engine.wait_for(has("vm_event", vm_id=vm["id"]))
    engine.wait_for(lambda request: len(guest_infos(engine, vm["id"])) >= 2)
    stats = len(engine.messages("stats"))
    engine.wait_for(lambda request: len(engine.messages("stats")) >= stats + 3)

    assert len(guest_infos(engine, vm["id"])) == 2
    assert len(guest_infos(engine, other["id"])) == 1


def test_unchanged_guest_information_goes_again_after_the_refresh(engine, driver, pusher, monkeypatch):
    monkeypatch.setattr(push, "GUEST_REFRESH", 0.5)
    vm = make_vm(driver)

    pusher.start()
    engine.wait_for(lambda request: len(guest_infos(engine, vm["id"])) >= 3)

    infos = guest_infos(engine, vm["id"])
    assert all(b["at"] - a["at"] >= 0.5 for a, b in zip(infos, infos[1:], strict=False))


def test_guest_information_the_engine_refused_goes_again(engine, driver, pusher):
    vm = make_vm(driver)
    refused = []

    def answer(body):
        if not refused and any(m["kind"] == "guest_info" for m in body["messages"]):
            refused.append(body["seq"])
            return 400, {"error": "messages[1].info is not good", "field": "messages[1].info"}
        return None

    engine.answer = answer
    pusher.start()
    engine.wait_for(has("guest_info", vm_id=vm["id"]))

    assert refused and len(guest_infos(engine, vm["id"])) == 1


def test_an_engine_that_is_down_is_retried_until_it_answers(engine, pki, tmp_path, scheduler):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    driver = SimDriver(make_config(pki, tmp_path, port))
    pusher = driven(Pusher(driver.config, driver), scheduler)
    try:
        pusher.start()
        deadline = time.monotonic() + WAIT
        while "cannot reach the engine" not in pusher.last_error and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "cannot reach the engine" in pusher.last_error
        with running_ingest_server(engine, pki, listen=[("127.0.0.1", port)]) as _:
            _, first, _ = engine.wait_for(lambda request: True, timeout=15)
            deadline = time.monotonic() + WAIT  # the pusher reads the answer after the engine got the request
            while pusher.last_error and time.monotonic() < deadline:
                time.sleep(0.02)
    finally:
        pusher.stop()

    assert first["seq"] > 1  # the failed tries were requests too
    assert [m["kind"] for m in first["messages"]][:2] == ["heartbeat", "vm_report"]
    assert pusher.last_error == ""


def test_stop_cuts_a_request_the_engine_does_not_answer(engine, driver, pusher):
    entered, answering = threading.Event(), threading.Event()

    def stuck(body):
        entered.set()
        answering.wait(WAIT)

    engine.answer = stuck
    pusher.start()
    assert entered.wait(WAIT)
    started = time.monotonic()
    pusher.stop(timeout=3)
    answering.set()

    assert time.monotonic() - started < 3
    assert not any(t.is_alive() for t in pusher._threads)


def test_a_malformed_message_is_left_out_and_the_rest_goes(engine, driver, pusher, caplog):
    pusher.start()
    engine.wait_for(has("heartbeat"))

    pusher.event("vm_event", {"vm_id": "not-a-uuid", "name": "x", "status": "up", "event": "started", "detail": ""})
    pusher.event("vm_status", {"vm_id": str(uuid.uuid4())})
    vm = make_vm(driver)
    engine.wait_for(has("vm_event", vm_id=vm["id"]))

    assert [m["vm_id"] for m in engine.messages("vm_event")] == [vm["id"]]
    assert "not pushing a malformed vm_event message: message.vm_id must be a UUID" in caplog.text


def test_the_sim_driver_emits_the_vm_event_shape_and_keeps_recent(pki, tmp_path):
    driver = SimDriver(make_config(pki, tmp_path, 1))
    seen = []
    driver.events.subscribe(lambda kind, payload: seen.append((kind, payload)))

    vm = make_vm(driver)
    driver.pause_vm(vm["id"])
    driver.resume_vm(vm["id"])
    driver.shutdown_vm(vm["id"])
    driver.create_vm(vm)
    driver.suspend_vm(vm["id"], "vm1.state")
    driver.restore_vm(vm["id"], "vm1.state")
    driver.destroy_vm(vm["id"])

    expected = [
        ("up", "started", "booted"),
        ("paused", "suspended", "paused"),
        ("up", "resumed", "unpaused"),
        ("down", "stopped", "shutdown"),
        ("up", "started", "booted"),
        ("suspended", "stopped", "saved"),
        ("up", "started", "restored"),
        ("down", "stopped", "destroyed"),
    ]
    assert seen == [
        ("vm_event", {"vm_id": vm["id"], "name": "vm1", "status": s, "event": e, "detail": d}) for s, e, d in expected
    ]
    assert driver.events.recent == [{"kind": "vm_event", **payload} for _, payload in seen]


def test_a_failing_event_listener_does_not_stop_the_others(caplog):
    sink, seen = EventSink(), []

    def broken(kind, payload):
        raise RuntimeError("boom")

    sink.subscribe(broken)
    sink.subscribe(lambda kind, payload: seen.append(kind))
    sink.emit("vm_event", {"vm_id": "x"})
    sink.unsubscribe(broken)
    sink.emit("vm_event", {"vm_id": "y"})

    assert seen == ["vm_event", "vm_event"]
    assert caplog.text.count("an event listener failed") == 1


def test_the_libvirt_driver_emits_the_vm_event_shape(pki, tmp_path):
    driver = LibvirtDriver(make_config(pki, tmp_path, 1, driver="libvirt", libvirt_uri="test:///default"))
    seen, arrived = [], threading.Condition()

    def listener(kind, payload):
        with arrived:
            seen.append((kind, payload))
            arrived.notify_all()

    driver.events.subscribe(listener)
    try:
        driver.connection()  # registers the lifecycle callback
        vm = make_vm(driver, f"ev-{uuid.uuid4().hex[:8]}")
        with arrived:  # the status is the VM's when the event is handled: wait before stopping it
            arrived.wait_for(lambda: any(p["event"] == "started" and p["vm_id"] == vm["id"] for _, p in seen), WAIT)
        driver.destroy_vm(vm["id"])
        with arrived:
            arrived.wait_for(lambda: any(p["event"] == "stopped" and p["vm_id"] == vm["id"] for _, p in seen), WAIT)
        driver.undefine_vm(vm["id"])
    finally:
        driver.close()

    events = [(kind, p["status"], p["event"], p["detail"]) for kind, p in seen if p["vm_id"] == vm["id"]]
    assert ("vm_event", "up", "started", "booted") in events
    assert ("vm_event", "down", "stopped", "destroyed") in events
    assert {p["name"] for _, p in seen if p["vm_id"] == vm["id"]} == {vm["name"]}


def test_the_push_settings_of_the_config(tmp_path):
    config = AgentConfig()

    assert (config.heartbeat_interval, config.stats_interval, config.guest_info_interval) == (2.0, 5.0, 10.0)
    assert config.push_timeout == 10.0
    assert config_from_dict({"heartbeat_interval": "0.5"}).heartbeat_interval == 0.5
    with pytest.raises(ConfigError, match="stats_interval: must be a positive number of seconds"):
        config_from_dict({"stats_interval": 0})
    with pytest.raises(ConfigError, match=r"engine_url: must be an https:// URL, like https://ENGINE:54322/ingest"):
        config_from_dict({"engine_url": "http://engine:54322/ingest"})


def test_serve_pushes_when_engine_url_is_set_and_stops_on_sigterm(engine, pki, server, tmp_path):
    config = tmp_path / "agent.json"
    config.write_text(
        json.dumps(
            {
                "listen_address": "127.0.0.1",
                "listen_port": 0,
                "driver": "sim",
                "host_name": "cli-h1",
                "cert_file": pki.host["cert_file"],
                "key_file": pki.host["key_file"],
                "ca_file": pki.host["ca_file"],
                "storage_roots": [str(tmp_path)],
                "engine_url": f"https://127.0.0.1:{server.ports[0]}/ingest",
                **SHORT,
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.Popen(
        [sys.executable, "-m", "hostagent", "serve", "--config", str(config)],
        cwd=REPO,
        env=env,
        stderr=subprocess.DEVNULL,
    )
    try:
        host_cn, first, _ = engine.wait_for(lambda request: True, timeout=20)
        proc.send_signal(signal.SIGTERM)
        status = proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

    assert host_cn == pki.host_id
    assert first["agent"]["hostname"] == "cli-h1"
    assert [m["kind"] for m in first["messages"]][:2] == ["heartbeat", "vm_report"]
    assert status == 0
