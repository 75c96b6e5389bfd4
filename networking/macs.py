"""MAC address arithmetic (pure functions)."""

import re

_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def normalize_mac(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("A MAC address is a string like 56:6f:1a:2b:00:01.")
    mac = value.strip().lower().replace("-", ":")
    if not _MAC_RE.match(mac):
        raise ValueError(f"'{value}' is not a MAC address like 56:6f:1a:2b:00:01.")
    return mac


def mac_to_int(value: object) -> int:
    return int(normalize_mac(value).replace(":", ""), 16)


def int_to_mac(value: int) -> str:
    raw = f"{value:012x}"
    return ":".join(raw[i : i + 2] for i in range(0, 12, 2))
