"""Shared fixtures: every test system gets its own free ports, so tests never collide
with each other or with a supervisor a developer has running."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from actors.config import load_config

ENDPOINT_KEYS = ("ingress", "timeline", "control", "av_out", "timeline_in", "system", "health",
                 "parser", "tts", "stitcher", "driver", "player", "web")


def free_ports(n: int) -> list[int]:
    sockets, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
        ports.append(s.getsockname()[1])
    for s in sockets:
        s.close()
    return ports


def write_config(path: Path, sections: dict | None = None) -> Path:
    """A config file with fresh loopback ports plus any extra ``{section: {key: value}}``.
    The web gateway is off unless a test turns it on (then on a free port too)."""
    ports = free_ports(len(ENDPOINT_KEYS) + 1)
    lines = ["[endpoints]"] + [f'{k} = "tcp://127.0.0.1:{p}"' for k, p in zip(ENDPOINT_KEYS, ports)]
    sections = {**(sections or {})}
    sections["web"] = {"enabled": False, "port": ports[-1], **sections.get("web", {})}
    for section, values in sections.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            lines.append(f"{key} = {toml_value(value)}")
    path.write_text("\n".join(lines) + "\n")
    load_config(path)  # fail here, not in a subprocess, if the test wrote a bad key
    return path


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)


@pytest.fixture
def config_file(tmp_path) -> Path:
    return write_config(tmp_path / "personas.toml")


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where tests leave files a person may want to look at (screens, recordings)."""
    path = Path(__file__).resolve().parent.parent / "out" / "test-artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path
