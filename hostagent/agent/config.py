"""The agent's configuration: one INI section `[agent]` or one JSON object, every key optional.

    [agent]
    listen_address = 0.0.0.0
    listen_port = 54321
    driver = libvirt                 ; libvirt | sim
    libvirt_uri = qemu:///system
    cert_file = /etc/olvm/agent/cert.pem   ; this host's certificate (usage=server), engine-signed
    key_file = /etc/olvm/agent/key.pem
    ca_file = /etc/olvm/agent/ca.pem       ; the engine CA: the only trust anchor for callers
    storage_roots = /var/lib/olvm/storage  ; comma- or newline-separated; image paths stay under these
    engine_url = https://ENGINE:54322/ingest   ; the engine's ingest listener; empty: push nothing
    heartbeat_interval = 2.0               ; seconds between heartbeats (each with a full VM report)
    stats_interval = 5.0                   ; seconds between host and VM statistics
    guest_info_interval = 10.0             ; seconds between guest-agent reads of the running VMs
    push_timeout = 10.0                    ; seconds a push may wait on the engine's socket

The push (docs/ingest.md) presents `cert_file`/`key_file` to the engine and checks the
engine's certificate against `ca_file` and the host name of `engine_url`; the engine's
answers replace the three intervals.

JSON takes the same keys, either at the top level or under "agent"; `storage_roots` may be
a list there. Relative paths are relative to the config file. Unknown keys are refused so
a typo never silently falls back to a default.
"""

from __future__ import annotations

import configparser
import json
import os
import urllib.parse
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

DEFAULT_PORT = 54321


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class AgentConfig:
    listen_address: str = "0.0.0.0"  # noqa: S104 - the agent serves the engine over the network
    listen_port: int = DEFAULT_PORT
    driver: str = "libvirt"
    libvirt_uri: str = "qemu:///system"
    cert_file: str = "/etc/olvm/agent/cert.pem"
    key_file: str = "/etc/olvm/agent/key.pem"
    ca_file: str = "/etc/olvm/agent/ca.pem"
    storage_roots: tuple[str, ...] = ("/var/lib/olvm/storage",)
    # Where `suspend_vm` writes memory state files given as a bare name; default
    # `<first storage root>/states`.
    state_dir: str = ""
    # The engine's ingest listener (`push.py`, docs/ingest.md); empty: push nothing.
    engine_url: str = ""
    heartbeat_interval: float = 2.0
    stats_interval: float = 5.0
    guest_info_interval: float = 10.0
    push_timeout: float = 10.0
    # The name the sim driver reports (and seeds its numbers from); default the hostname.
    host_name: str = ""
    # KVM: auto = use it when libvirt offers it and the probe guest really runs; yes; no.
    kvm: str = "auto"
    graphics_listen: str = "127.0.0.1"
    # Disk cache mode of every disk unless the spec says otherwise. `none` (O_DIRECT) is
    # what migration with shared storage wants; tmpfs cannot do it, use `writeback` there.
    disk_cache: str = "none"
    qemu_img: str = "qemu-img"
    request_timeout: float = 60.0
    long_timeout: float = 600.0  # suspend, restore, snapshots
    image_timeout: float = 3600.0  # qemu-img create / convert / resize
    handshake_timeout: float = 10.0
    socket_timeout: float = 30.0
    console_idle_timeout: float = 3600.0
    max_request_bytes: int = 1024 * 1024
    max_batch: int = 20
    max_concurrent_calls: int = 16
    max_connections: int = 64
    log_level: str = "INFO"
    source: str = field(default="", compare=False)

    @property
    def effective_state_dir(self) -> str:
        return self.state_dir or os.path.join(self.storage_roots[0], "states")


_PATH_KEYS = {"cert_file", "key_file", "ca_file", "state_dir", "qemu_img"}
_CHOICES = {
    "driver": ("libvirt", "sim"),
    "kvm": ("auto", "yes", "no"),
    "log_level": ("DEBUG", "INFO", "WARNING", "ERROR"),
}
_DISK_CACHES = ("none", "writeback", "writethrough", "directsync", "unsafe")
_POSITIVE_FLOATS = {
    "request_timeout",
    "long_timeout",
    "image_timeout",
    "handshake_timeout",
    "socket_timeout",
    "console_idle_timeout",
    "heartbeat_interval",
    "stats_interval",
    "guest_info_interval",
    "push_timeout",
}
_POSITIVE_INTS = {"max_request_bytes", "max_batch", "max_concurrent_calls", "max_connections"}


def load_config(path: str | os.PathLike) -> AgentConfig:
    """Read an INI (`[agent]` section) or JSON config file; raise ConfigError naming the bad key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"Cannot read config file {path}: {exc.strerror}") from None
    if text.lstrip().startswith("{"):
        try:
            values = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{path}: not valid JSON: {exc}") from None
        if isinstance(values, dict) and isinstance(values.get("agent"), dict) and len(values) == 1:
            values = values["agent"]
    else:
        parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"))
        try:
            parser.read_string(text, source=str(path))
        except configparser.Error as exc:
            raise ConfigError(f"{path}: not a valid INI file: {exc}") from None
        extra = [s for s in parser.sections() if s != "agent"]
        if extra:
            raise ConfigError(f"{path}: unknown section(s) {', '.join(extra)}; everything goes under [agent]")
        values = dict(parser["agent"]) if parser.has_section("agent") else {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: the configuration must be an object of settings")
    return config_from_dict(values, base_dir=path.parent, source=str(path))


def config_from_dict(values: dict, *, base_dir: str | os.PathLike | None = None, source: str = "") -> AgentConfig:
    known = {f.name: f for f in fields(AgentConfig) if f.name != "source"}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"Unknown setting(s): {', '.join(unknown)}")
    cleaned: dict = {}
    for name, raw in values.items():
        cleaned[name] = _coerce(name, raw, base_dir)
    config = replace(AgentConfig(), **cleaned, source=source)
    if not config.storage_roots:
        raise ConfigError("storage_roots: give at least one directory")
    if config.disk_cache not in _DISK_CACHES:
        raise ConfigError(f"disk_cache: must be one of {', '.join(_DISK_CACHES)}")
    if config.engine_url:
        _check_engine_url(config.engine_url)
    return config


def _check_engine_url(url: str) -> None:
    try:
        parts = urllib.parse.urlsplit(url)
        valid = parts.scheme == "https" and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a bad port or a broken [IPv6] address
        valid = False
    if not valid:
        raise ConfigError("engine_url: must be an https:// URL, like https://ENGINE:54322/ingest")


def _coerce(name: str, raw, base_dir):
    default = getattr(AgentConfig, name, None)
    if name == "storage_roots":
        items = raw if isinstance(raw, list) else str(raw).replace("\n", ",").split(",")
        roots = []
        for item in items:
            if not isinstance(item, str):
                raise ConfigError("storage_roots: every entry must be a path")
            item = item.strip()
            if item:
                roots.append(os.path.normpath(_resolve(item, base_dir)))
        return tuple(roots)
    if name in _POSITIVE_FLOATS:
        value = _number(name, raw, float)
        if value <= 0:
            raise ConfigError(f"{name}: must be a positive number of seconds")
        return value
    if name in _POSITIVE_INTS or name == "listen_port":
        value = _number(name, raw, int)
        low = 0 if name == "listen_port" else 1
        high = 65535 if name == "listen_port" else 2**40
        if not low <= value <= high:
            raise ConfigError(f"{name}: must be between {low} and {high}")
        return value
    if not isinstance(raw, str):
        raise ConfigError(f"{name}: must be a string")
    value = raw.strip()
    if name in _CHOICES:
        value = value.upper() if name == "log_level" else value.lower()
        if value not in _CHOICES[name]:
            raise ConfigError(f"{name}: must be one of {', '.join(_CHOICES[name])}")
    if name in _PATH_KEYS and value and (name != "qemu_img" or "/" in value):
        value = _resolve(value, base_dir)
    if isinstance(default, str) and name in ("libvirt_uri", "listen_address") and not value:
        raise ConfigError(f"{name}: must not be empty")
    return value


def _number(name: str, raw, kind):
    if isinstance(raw, bool):
        raise ConfigError(f"{name}: must be a number")
    try:
        value = kind(raw.strip() if isinstance(raw, str) else raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: must be {'an integer' if kind is int else 'a number'}, not {raw!r}") from None
    if kind is int and isinstance(raw, float) and raw != int(raw):
        raise ConfigError(f"{name}: must be an integer")
    return value


def _resolve(value: str, base_dir) -> str:
    if base_dir is None or os.path.isabs(value):
        return value
    return os.path.join(os.path.abspath(base_dir), value)
