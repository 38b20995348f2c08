"""A config file on private loopback ports: every test and scene runs its own system this
way, so none collides with another or with a supervisor a developer has running."""

from __future__ import annotations

from pathlib import Path

from protocol.config import load_config, to_toml
from protocol.names import ENDPOINT_NAMES
from protocol.transport import free_ports

__all__ = ["free_ports", "write_private_config"]


def write_private_config(path: Path, sections: dict | None = None) -> Path:
    """A config file with fresh loopback ports for every endpoint, plus any extra
    ``{section: {key: value}}``. The web gateway is off unless ``sections`` turns it on
    (it then gets a free port too). Warm spares are off unless ``sections`` asks for them:
    a test that does not kill actors would only pay for loading two more on two cores. The
    file is loaded once here, so a bad key fails in the caller and not in a subprocess."""
    ports = free_ports(len(ENDPOINT_NAMES) + 1)
    sections = {**(sections or {})}
    sections["endpoints"] = {**{k: f"tcp://127.0.0.1:{p}" for k, p in zip(ENDPOINT_NAMES, ports)},
                             **sections.get("endpoints", {})}
    sections["web"] = {"enabled": False, "port": ports[-1], **sections.get("web", {})}
    sections["supervisor"] = {"warm_spares": [], **sections.get("supervisor", {})}
    path = Path(path)
    path.write_text(to_toml(sections))
    load_config(path)
    return path
