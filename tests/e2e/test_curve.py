"""CURVE beyond loopback: an endpoint bound beyond loopback needs keys (a clear start-up error
without them); with them, a second client that lacks an allowed key is refused - by the
ingress, the control endpoint and the timeline - and the refusal is on the timeline, while
the keyed client works as before."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

import pytest
import zmq

from clients.feeder import Feeder
from clients.ports import free_ports, write_private_config
from clients.session import Session
from clients.timeline import TimelineRecorder
from protocol.control_endpoint import ControlClient
from protocol.security import generate_keys

pytestmark = pytest.mark.e2e
SECRET_TEXT = "A stranger's words must never be spoken here."


def beyond_loopback(tmp_path, keys) -> tuple[str, list[str]]:
    """A private config whose public endpoints bind on every interface, with CURVE keys."""
    config = write_private_config(tmp_path / "c.toml", {"security": {"curve_dir": str(keys)}})
    ports = free_ports(4)
    return str(config), [f'endpoints.{name}="tcp://0.0.0.0:{port}"'
                         for name, port in zip(("ingress", "timeline", "control", "av_out"), ports)]


def test_a_public_bind_beyond_loopback_without_keys_is_refused_at_start(tmp_path):
    ports = free_ports(1)
    config = write_private_config(tmp_path / "c.toml")
    result = subprocess.run([sys.executable, "-m", "supervisor", "up", "--config", str(config),
                             "--set", f'endpoints.ingress="tcp://0.0.0.0:{ports[0]}"'],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "endpoints.ingress" in result.stderr and "security.curve_dir" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_keys_gen_writes_private_secrets(tmp_path):
    keys = tmp_path / "keys"
    result = subprocess.run([sys.executable, "-m", "supervisor.personas_cli_entry", "keys", "gen", str(keys)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for name in ("server.key", "server.key_secret", "client.key", "client.key_secret", "allowed/client.key"):
        assert (keys / name).exists(), name
    assert stat.S_IMODE(os.stat(keys / "server.key_secret").st_mode) == 0o600
    again = subprocess.run([sys.executable, "-m", "supervisor.personas_cli_entry", "keys", "gen", str(keys)],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode != 0 and "never overwritten" in again.stderr


@pytest.fixture(scope="module")
def curved(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("curve")
    keys = tmp / "keys"
    generate_keys(keys)
    config, overrides = beyond_loopback(tmp, keys)
    session = Session(config, overrides, log=tmp / "s.log")
    session.start()
    try:
        yield session, tmp
    finally:
        session.stop()


def test_a_client_without_an_allowed_key_is_refused_and_the_refusal_is_on_the_timeline(curved):
    session, tmp = curved
    endpoints = session.endpoints
    start = len(session.timeline.events)
    # No key at all, then a key pair of its own that nobody allowed.
    stranger_keys = generate_keys(tmp / "stranger")
    import zmq.auth

    server_public, _ = zmq.auth.load_certificate(tmp / "keys" / "server.key")
    public, secret = zmq.auth.load_certificate(stranger_keys["client_secret"])
    wrong = {"serverkey": server_public, "publickey": public, "secretkey": secret}
    for curve in (None, wrong):
        assert ControlClient(endpoints["control"], timeout_ms=1500, curve=curve).call("status") is None
        feeder = Feeder(endpoints["ingress"], ctx=zmq.Context.instance(), curve=curve)
        watcher = TimelineRecorder(endpoints["timeline"], curve=curve)
        feeder.sock.setsockopt(zmq.SNDTIMEO, 500)
        try:
            feeder.feed([SECRET_TEXT], end=True)
        except zmq.Again:
            pass  # no handshake, nowhere to queue: refused before a byte of text was taken
        time.sleep(1.5)  # long enough for several handshake attempts
        got = len(watcher.events)
        feeder.sock.close(linger=0)
        watcher.close()
        assert got == 0  # the timeline is not readable either
    refused = session.timeline.wait_for(lambda e: e["stage"] == "auth" and e["actor"] == "parser", 10, start)
    assert refused is not None and refused["result"] == "error"
    assert session.timeline.wait_for(lambda e: e["stage"] == "auth" and e["actor"] == "supervisor", 10, start)
    # The keyed client: everything works, and the stranger's words were never parsed.
    assert session.control.call("status")["supervisor"]["state"] == "running"
    done = session.say_and_wait("Only the keyed client is heard.", timeout=60)
    assert done["stage"] == "utterance_presented"
    parsed = " ".join(e["data"].get("text", "") for e in session.timeline.events if e["stage"] == "parse")
    assert "stranger" not in parsed and "keyed client" in parsed
