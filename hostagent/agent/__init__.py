"""The OLVM host agent daemon: JSON-RPC 2.0 over mutually authenticated TLS, no Django inside.

Run it with `python -m hostagent serve --config FILE`. Layout:

- `config.py`   the INI/JSON configuration (`AgentConfig`)
- `server.py`   HTTPS + mTLS transport, JSON-RPC dispatch, per-call timeouts, console streams
- `verbs.py`    the verb table and the parameter validation of every verb
- `domxml.py`   libvirt domain XML from a VM spec (xml.etree, so everything is escaped)
- `images.py`   qemu-img wrappers confined to the configured storage roots
- `drivers/`    `libvirt` (any libvirt URI) and `sim` (an in-memory simulated hypervisor)
"""

AGENT_VERSION = "0.1.0"
