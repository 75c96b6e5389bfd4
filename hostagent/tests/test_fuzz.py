"""Bad input to every verb: wrong types, missing and unknown params, garbage JSON, oversized
bodies. Each gets a JSON-RPC error object, never a crash, and the server keeps serving."""

import copy
import json
import socket
import ssl
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostagent.agent import verbs as v
from hostagent.agent.testing import RawRpc, agent_config, make_pki, running_agent, sample_params
from hostagent.agent.verbs import MISSING, VERBS

MAX_BODY = 64 * 1024
APPLICATION_CODES = {-32000, -32001, -32002, -32003, -32004, -32005, -32006}
FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Verbs whose valid calls write real files (qemu-img) are fuzzed on the simulated host only.
# and so are verbs that change the host itself (setup_networks makes Linux bridges).
WRITES_IMAGES = {"image_create", "image_clone", "image_copy", "setup_networks"}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module", params=["sim", "libvirt"])
def target(request, pki, tmp_path_factory):
    storage = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    (storage / "sd1").mkdir()
    config = agent_config(
        pki,
        driver=request.param,
        libvirt_uri="test:///default",
        storage_roots=[str(storage)],
        max_request_bytes=MAX_BODY,
        max_batch=5,
        request_timeout=10,
        socket_timeout=1,
    )
    with running_agent(config) as server:
        samples = sample_params(str(storage / "sd1"))
        spec = samples["create_vm"]["spec"]
        spec["disks"] = [{"id": str(uuid.uuid4()), "storage_domain": {"path": str(storage / "sd1")}}]
        spec["nics"] = [{"mac": "56:6f:00:00:00:07", "network": "ovirtmgmt"}]
        yield request.param, RawRpc(server, pki), samples
        cleanup = RawRpc(server, pki)
        for vm in cleanup.call("vm_list")["result"]["vms"]:
            if vm["managed"]:
                cleanup.call("destroy_vm", {"vm_id": vm["vm_id"]})
                cleanup.call("undefine_vm", {"vm_id": vm["vm_id"]})


def assert_still_serving(rpc: RawRpc) -> None:
    assert rpc.call("ping")["result"]["ok"] is True


def assert_json_rpc_reply(reply: dict, rid=1) -> None:
    assert reply["jsonrpc"] == "2.0" and reply["id"] == rid
    assert ("result" in reply) != ("error" in reply)
    if "error" in reply:
        error = reply["error"]
        assert isinstance(error["code"], int) and isinstance(error["message"], str) and error["message"]
        assert error["code"] != -32603, error  # an internal error is a bug in the agent
        if error["code"] == -32602:
            assert error["data"]["field"].startswith("params"), error


def bad_values(spec: v.Spec) -> list:
    """Values this spec refuses whatever else is in the call."""
    if isinstance(spec, v.Nullable):
        return [bad for bad in bad_values(spec.inner) if bad is not None]
    if isinstance(spec, v.AbsPath):
        return ["relative/path", "/srv/../etc", 5, None, ""]
    if isinstance(spec, v.Text):
        values = [12, True, [], {}, None, "nul\x00byte", "x" * (spec.max_len + 1)]
        return values + ([""] if spec.min_len else [])
    if isinstance(spec, v.Uuid):
        return ["not-a-uuid", "../../etc/passwd", "/etc/passwd", 5, None, "{" + str(uuid.uuid4()) + "}"]
    if isinstance(spec, v.Mac):
        return ["01:00:5e:00:00:01", "zz:zz:zz:zz:zz:zz", "56-6f-00-00-00-01", 5, None]
    if isinstance(spec, v.Int):
        return ["5", True, 1.5, spec.low - 1, spec.high + 1, None, []]
    if isinstance(spec, v.Bool):
        return ["true", 1, None, {}]
    if isinstance(spec, v.Enum):
        return ["not-a-choice", 1, None, spec.choices[0].upper() + "!"]
    if isinstance(spec, v.ListOf):
        return [{}, "x", None, [None] * (spec.max_items + 1), [5]]
    if isinstance(spec, v.Obj):
        return [[], "x", 5, None, {}]
    raise AssertionError(f"no bad values for {spec!r}")


def mutations(spec: v.Spec, sample, path: str, depth: int = 0):
    """(field path, JSON path, bad value) for the field at `path` and every field inside it."""
    for bad in bad_values(spec):
        yield path, bad
    inner = spec.inner if isinstance(spec, v.Nullable) else spec
    if depth >= 3:
        return
    if isinstance(inner, v.Obj) and isinstance(sample, dict):
        for name, field in inner.fields.items():
            yield from mutations(field.spec, sample.get(name), f"{path}.{name}", depth + 1)
    if isinstance(inner, v.ListOf) and isinstance(sample, list) and sample:
        yield from mutations(inner.item, sample[0], f"{path}[0]", depth + 1)


def set_path(params: dict, path: str, value) -> dict:
    """A copy of params with the field at `params.a.b[0].c` set to value."""
    params = copy.deepcopy(params)
    keys = []
    for part in path.split(".")[1:]:
        name, _, index = part.partition("[")
        keys.append(name)
        if index:
            keys.append(int(index.rstrip("]")))
    node = params
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value
    return params


def test_every_verb_refuses_a_missing_required_param(target):
    _, rpc, samples = target
    for verb in VERBS.values():
        for name, field in verb.params.items():
            if field.default is not MISSING:
                continue
            params = {k: val for k, val in samples[verb.name].items() if k != name}
            reply = rpc.call(verb.name, params)
            assert reply["error"]["code"] == -32602, (verb.name, name, reply)
            assert reply["error"]["data"]["field"] == f"params.{name}"
            assert reply["error"]["message"] == f"params.{name}: is required"
    assert_still_serving(rpc)


def test_every_verb_refuses_an_unknown_param(target):
    _, rpc, samples = target
    for verb in VERBS.values():
        reply = rpc.call(verb.name, {**samples[verb.name], "bogus": 1})
        assert reply["error"]["code"] == -32602
        assert reply["error"]["data"]["field"] == "params.bogus"


def test_every_field_of_every_verb_refuses_wrong_values_and_names_the_field(target):
    driver, rpc, samples = target
    checked = 0
    for verb in VERBS.values():
        for name, field in verb.params.items():
            for path, bad in mutations(field.spec, samples[verb.name].get(name), f"params.{name}"):
                reply = rpc.call(verb.name, set_path(samples[verb.name], path, bad))
                assert_json_rpc_reply(reply)
                assert "error" in reply, (verb.name, path, bad, reply)
                field_name = reply["error"]["data"]["field"]
                assert reply["error"]["code"] == -32602, (verb.name, path, bad, reply)
                assert field_name == path or field_name.startswith((path + ".", path + "[")), (path, bad, reply)
                checked += 1
    assert checked > 1000
    assert_still_serving(rpc)


def test_positional_params_are_validated_the_same_way(target):
    _, rpc, _ = target

    too_many = rpc.call("ping", [1])
    wrong = rpc.call("shutdown_vm", [str(uuid.uuid4()), "soon"])

    assert too_many["error"]["code"] == -32602 and too_many["error"]["data"]["field"] == "params"
    assert wrong["error"]["data"]["field"] == "params.timeout"


def driver_verb_pairs(verbs) -> list[tuple[str, str]]:
    """Every (driver, verb) to fuzz: the verbs that write images of random sizes run on the
    simulated driver only, so a fuzz run never fills the disk with real images."""
    names = sorted(verbs)
    return [(d, v) for d in ("sim", "libvirt") for v in names if not (d == "libvirt" and v in WRITES_IMAGES)]


@pytest.mark.parametrize(("target", "verb"), driver_verb_pairs(VERBS), indirect=["target"])
def test_random_params_never_crash_a_verb(target, verb):
    driver, rpc, samples = target

    @FUZZ
    @given(params=st.dictionaries(st.sampled_from([*VERBS[verb].params, "x"]), json_values, max_size=4) | json_values)
    def check(params):
        message = {"jsonrpc": "2.0", "id": 1, "method": verb, "params": params}
        status, reply = rpc.post(json.dumps(message).encode())
        assert status == 200
        assert_json_rpc_reply(reply)
        if not isinstance(params, dict | list):
            assert reply["error"]["code"] == -32600

    check()
    assert_still_serving(rpc)


@pytest.mark.parametrize(
    ("target", "verb"), driver_verb_pairs(name for name, verb in VERBS.items() if verb.params), indirect=["target"]
)
def test_a_valid_call_with_one_field_replaced_by_anything_never_crashes(target, verb):
    driver, rpc, samples = target
    paths = sorted(
        {
            path
            for name, field in VERBS[verb].params.items()
            for path, _ in mutations(field.spec, samples[verb].get(name), f"params.{name}")
        }
    )

    @FUZZ
    @given(path=st.sampled_from(paths), value=json_values)
    def check(path, value):
        params = set_path(samples[verb], path, value)
        reply = rpc.call(verb, params)
        assert_json_rpc_reply(reply)
        if "error" in reply:
            assert reply["error"]["code"] in APPLICATION_CODES | {-32602}, reply

    check()
    assert_still_serving(rpc)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=300))
def test_garbage_bodies_are_parse_errors(pki, tmp_path_factory, body):
    rpc = _garbage_rpc(pki, tmp_path_factory)
    status, reply = rpc.post(body)

    assert status == 200
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = ValueError
    if parsed is ValueError:
        assert reply == {"jsonrpc": "2.0", "id": None, "error": reply["error"]}
        assert reply["error"]["code"] == -32700
    elif reply is not None:
        assert reply["error"]["code"] if isinstance(reply, dict) else all("error" in r for r in reply)


_GARBAGE: dict = {}


def _garbage_rpc(pki, tmp_path_factory) -> RawRpc:
    """One sim agent shared by the hypothesis examples of the garbage test (fixtures are per test)."""
    if "rpc" not in _GARBAGE:
        config = agent_config(pki, driver="sim", storage_roots=[str(tmp_path_factory.mktemp("garbage"))])
        _GARBAGE["context"] = running_agent(config)
        server = _GARBAGE["context"].__enter__()
        _GARBAGE["rpc"] = RawRpc(server, pki)
    return _GARBAGE["rpc"]


@pytest.fixture(scope="module", autouse=True)
def _stop_garbage_agent():
    yield
    if "context" in _GARBAGE:
        _GARBAGE.pop("context").__exit__(None, None, None)
        _GARBAGE.clear()


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"", -32700),
        (b"{", -32700),
        (b"\xff\xfe{}", -32700),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": NaN}', -32700),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"x": Infinity}}', -32700),
        (b"[" * 30000 + b"]" * 30000, -32700),  # deeper than the JSON parser recurses
        (b"1" * 5000, -32700),
        (b"[]", -32600),
        (b"42", -32600),
        (b"null", -32600),
        (b'"ping"', -32600),
        (b'{"jsonrpc": "1.0", "id": 1, "method": "ping"}', -32600),
        (b'{"id": 1, "method": "ping"}', -32600),
        (b'{"jsonrpc": "2.0", "id": 1, "method": 5}', -32600),
        (b'{"jsonrpc": "2.0", "id": 1.5, "method": "ping"}', -32600),
        (b'{"jsonrpc": "2.0", "id": true, "method": "ping"}', -32600),
        (b'{"jsonrpc": "2.0", "id": {}, "method": "ping"}', -32600),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": "x"}', -32600),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": 5}', -32600),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "no_such_verb"}', -32601),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "rpc.discover"}', -32601),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "__init__"}', -32601),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "close"}', -32601),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"a": 1}}', -32602),
    ],
    ids=lambda value: value[:40].decode("latin-1") if isinstance(value, bytes) else str(value),
)
def test_malformed_requests_get_the_json_rpc_error_for_them(target, body, code):
    _, rpc, _ = target

    status, reply = rpc.post(body)

    assert status == 200
    assert reply["jsonrpc"] == "2.0" and reply["error"]["code"] == code, reply


def test_unknown_verbs_list_the_verbs_there_are(target):
    _, rpc, _ = target

    reply = rpc.call("no_such_verb")

    assert reply["error"]["data"]["verbs"] == sorted(VERBS)


def test_batches(target):
    _, rpc, _ = target
    batch = [
        {"jsonrpc": "2.0", "id": "a", "method": "ping"},
        {"jsonrpc": "2.0", "method": "ping"},  # a notification: no reply
        {"jsonrpc": "2.0", "id": "b", "method": "nope"},
        5,
        {"jsonrpc": "2.0", "id": "c", "method": "destroy_vm", "params": {"vm_id": "x"}},
    ]

    status, replies = rpc.post(json.dumps(batch).encode())

    assert status == 200
    assert [(r["id"], r.get("error", {}).get("code")) for r in replies] == [
        ("a", None),
        ("b", -32601),
        (None, -32600),
        ("c", -32602),
    ]
    too_big = rpc.post(json.dumps([batch[0]] * 6).encode())[1]
    assert too_big["error"]["code"] == -32600 and "at most 5" in too_big["error"]["message"]
    only_notifications = rpc.post(json.dumps([batch[1], batch[1]]).encode())
    assert only_notifications == (204, None)
    assert rpc.post(json.dumps(batch[1]).encode()) == (204, None)


def test_an_oversized_body_is_refused_unread(target):
    _, rpc, _ = target
    filler = " " * (MAX_BODY - 40)
    just_fits = ('{"jsonrpc":"2.0","id":1,"method":"ping"}' + filler)[:MAX_BODY].encode()

    status, reply = rpc.post(b"[" + b" " * MAX_BODY + b"]")

    assert status == 413
    assert reply["error"]["code"] == -32600 and f"limit of {MAX_BODY}" in reply["error"]["message"]
    assert len(just_fits) == MAX_BODY and rpc.post(just_fits)[1]["result"]["ok"] is True
    assert_still_serving(rpc)


def test_http_level_mistakes_still_get_json_rpc_errors(target):
    _, rpc, _ = target

    assert rpc.post(b"{}", path="/")[0] == 404
    assert rpc.post(b"{}", path="/rpc/../x")[0] == 404
    status, reply = rpc.post(b"", method="GET")
    assert status == 405 and reply["error"]["code"] == -32600
    assert rpc.post(b"{}", method="PUT")[0] == 405
    status, reply = rpc.post(b"{}", method="BREW")
    assert status == 501 and reply["error"]["code"] == -32600
    status, reply = rpc.post(b"5\r\n{}{}{\r\n0\r\n\r\n", headers={"Transfer-Encoding": "chunked"})
    assert status == 411 and reply["error"]["code"] == -32600
    status, reply = rpc.post(b"{}", headers={"Content-Length": "-5"})
    assert status == 400 and reply["error"]["code"] == -32600
    assert_still_serving(rpc)


def raw_exchange(rpc: RawRpc, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", rpc.port), timeout=10) as raw:
        with rpc.context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(payload)
            data = b""
            while True:
                try:
                    chunk = tls.recv(65536)
                except (ssl.SSLError, OSError):
                    break
                if not chunk:
                    break
                data += chunk
            return data


def test_raw_protocol_garbage_gets_an_http_error_with_a_json_rpc_body(target):
    _, rpc, _ = target

    for payload in (
        b"\x00\x01\x02 garbage\r\n\r\n",
        b"POST /rpc HTTP/9.9\r\n\r\n",
        b"POST /rpc HTTP/1.1\r\n\r\n",
        b"GET\r\n\r\n",
        b"POST /rpc HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n",
    ):
        data = raw_exchange(rpc, payload)
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1."), (payload, data)
        assert json.loads(body)["error"]["code"] in (-32600, -32700), (payload, data)
    assert_still_serving(rpc)


def test_a_body_shorter_than_its_content_length_times_out_with_408(target):
    _, rpc, _ = target

    data = raw_exchange(rpc, b"POST /rpc HTTP/1.1\r\nContent-Length: 10\r\n\r\n{}")

    assert data.startswith(b"HTTP/1.1 408 ")
    assert json.loads(data.partition(b"\r\n\r\n")[2])["error"]["code"] == -32600


def test_a_request_line_longer_than_the_limit(target):
    _, rpc, _ = target

    data = raw_exchange(rpc, b"POST /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n")

    assert data.startswith(b"HTTP/1.1 414")
    assert_still_serving(rpc)
