"""A config file on private loopback ports: every test and scene runs its own system this
way, so none collides with another or with a supervisor a developer has running."""

from __future__ import annotations

import socket
from pathlib import Path

from protocol.config import load_config
from protocol.names import ENDPOINT_NAMES


def free_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports that were free a moment ago (held open together)."""
    sockets, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
        ports.append(s.getsockname()[1])
    for s in sockets:
        s.close()
    return ports


def write_private_config(path: Path, sections: dict | None = None) -> Path:
    """A config file with fresh loopback ports for every endpoint, plus any extra
    ``{section: {key: value}}``. The web gateway is off unless ``sections`` turns it on
    (it then gets a free port too). Warm spares are off unless ``sections`` asks for them:
    a test that does not kill actors would only pay for loading two more on two cores. The
    file is loaded once here, so a bad key fails in the caller and not in a subprocess."""
    ports = free_ports(len(ENDPOINT_NAMES) + 1)
    lines = ["[endpoints]"] + [f'{k} = "tcp://127.0.0.1:{p}"' for k, p in zip(ENDPOINT_NAMES, ports)]
    sections = {**(sections or {})}
    sections["web"] = {"enabled": False, "port": ports[-1], **sections.get("web", {})}
    sections["supervisor"] = {"warm_spares": [], **sections.get("supervisor", {})}
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in values.items()]
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    load_config(path)
    return path


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)
