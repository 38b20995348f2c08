"""Nobody let in: the control token for every state-changing command, and the web API's
checks (Host, Origin, token, JSON only, 4xx for bad requests), each refusal shown with a real
second client that lacks what it takes. And the monitoring that says the truth: a stuck
pipeline is reported stuck, with the link named, though every actor still beats."""

from __future__ import annotations

import http.client
import json
import os
import random
import stat
import subprocess
import sys
import time

import pytest

from clients.session import Session, private_system
from protocol.control_endpoint import ControlClient, read_token, token_path

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    sections = {"web": {"enabled": True}, "supervisor": {"stuck_after_s": 3.0}}
    with private_system(tmp_path_factory.mktemp("security"), sections, capture=False) as (session, _):
        yield session
    assert not token_path(session.endpoints["control"]).exists()  # `down` removes it


def request(session: Session, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    web = session.config["web"]
    conn = http.client.HTTPConnection(web["host"], web["port"], timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        reply = conn.getresponse()
        return reply.status, reply.read()
    finally:
        conn.close()


def good_headers(session: Session) -> dict:
    return {"Content-Type": "application/json", "X-Personas-Token": read_token(session.endpoints["control"])}


def test_the_token_file_is_private_and_changes_need_it(live):
    endpoint = live.endpoints["control"]
    path = token_path(endpoint)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and len(read_token(endpoint)) >= 32
    start = len(live.timeline.events)
    for token in ("", "not-the-token"):
        stranger = ControlClient(endpoint, token=token)
        assert stranger.call("status")["ok"]  # reading is open
        for cmd, args in (("barge_in", {}), ("config_set", {"changes": {"fault.kind": "stall"}}), ("down", {})):
            reply = stranger.call(cmd, **args)
            assert reply["ok"] is False and "unauthorized" in reply["error"], (cmd, reply)
    refused = live.timeline.wait_for(lambda e: e["stage"] == "control_refused", 5, start)
    assert refused is not None and refused["data"]["why"] == "no control token"
    status = ControlClient(endpoint).call("status")
    assert status["supervisor"]["state"] == "running" and status["supervisor"]["epoch"] == 0
    assert ControlClient(endpoint).call("config_get", key="fault.kind")["value"] == "none"
    # The owner's client reads the file: the same call passes.
    assert ControlClient(endpoint).call("config_set", changes={"fault.kind": "none"})["ok"]
    assert read_token(endpoint) not in json.dumps(live.timeline.events)  # never on the timeline


def test_the_web_refuses_foreign_hosts_origins_and_token_less_writes(live):
    web = live.config["web"]
    own = f"http://{web['host']}:{web['port']}"
    status, page = request(live, "GET", "/")
    assert status == 200 and read_token(live.endpoints["control"]).encode() in page  # the page carries it
    # DNS rebinding: the right address under another name reads nothing, not even the page.
    for path in ("/", "/config", "/ws"):
        assert request(live, "GET", path, headers={"Host": f"attacker.example:{web['port']}"})[0] == 421
    say = json.dumps({"text": "Hello."}).encode()
    headers = good_headers(live)
    assert request(live, "POST", "/say", say, {**headers, "Origin": "http://attacker.example"})[0] == 403
    assert request(live, "GET", "/config", headers={"Origin": "http://attacker.example"})[0] == 403
    assert request(live, "POST", "/barge-in", b"{}", {"Content-Type": "application/json"})[0] == 401
    assert request(live, "POST", "/config", json.dumps({"changes": {"tts.fallback": ""}}).encode(),
                   {**headers, "X-Personas-Token": "guess"})[0] == 401
    assert request(live, "POST", "/say", b"text=hi", {**headers, "Content-Type": "text/plain"})[0] == 415
    assert request(live, "POST", "/say", say, {**headers, "Origin": own})[0] == 200  # the page's own origin
    assert ControlClient(live.endpoints["control"]).call("config_get", key="tts.fallback")["value"] == "espeak"


def test_bad_bodies_get_a_4xx_with_a_reason_never_a_500(live):
    headers = good_headers(live)
    rng = random.Random(7)
    shapes = [b"", b"{", b"[]", b"null", b"\"text\"", b"{\"text\": 5}", b"{\"changes\": []}", b"{\"changes\": {\"x\": 1}}",
              b"\xff\xfe", b"{\"text\": \"" + b"a" * 20000 + b"\"}", b"{\"changes\": {\"media.fps\": 0}}"]
    shapes += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))) for _ in range(60)]
    seen = set()
    for body in shapes:
        for path in ("/say", "/config", "/barge-in"):
            status, reply = request(live, "POST", path, body, headers)
            seen.add(status)
            assert status < 500, (path, body[:40], status, reply[:200])
            if status >= 400:
                assert reply.strip(), (path, body[:40])  # a reason, not an empty refusal
    assert 400 in seen
    assert live.control.call("status")["supervisor"]["state"] == "running"


def test_a_voice_change_to_a_fifo_or_a_foreign_file_is_refused_at_once(live, tmp_path):
    fifo = tmp_path / "stuck.json"
    os.mkfifo(fifo)
    secret = tmp_path / "secret.json"
    secret.write_text('{"password": "hunter2"}')
    errors = []
    for path in (fifo, secret):
        started = time.monotonic()
        reply = live.control.call("config_set", changes={"voice.persona": str(path)})
        assert reply is not None and time.monotonic() - started < 3.0  # nothing waited on the FIFO
        assert reply["ok"] is False and "must lie in" in reply["error"], reply
        errors.append(reply["error"].replace(path.name, "F"))
    assert errors[0] == errors[1] and "password" not in errors[1]  # nothing about the file leaks
    assert live.control.call("status")["supervisor"]["state"] == "running"
    assert all(a["restarts"] == 0 for a in live.control.call("status")["actors"].values())


def test_a_stalled_engine_without_fallback_is_reported_stuck_with_its_link_named(live):
    control = live.control
    assert control.call("config_set", changes={"tts.fallback": "", "fault.adapter": "piper", "fault.kind": "stall",
                                               "fault.ms": 15_000})["ok"]
    start = len(live.timeline.events)
    try:
        live.say("This sentence waits for an engine that has stopped answering. So does this one.")
        stuck = live.timeline.wait_for(lambda e: e["stage"] == "progress" and e["result"] == "error", 20, start)
        assert stuck is not None, "the progress check never said stuck"
        assert stuck["data"]["stuck_at"].startswith("tts:") and "piper" in stuck["data"]["stuck_at"], stuck["data"]
        result = subprocess.run([sys.executable, "-m", "supervisor", "status", "--config", live.config_path],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 3 and "STUCK: tts" in result.stderr, (result.returncode, result.stderr)
        status = control.call("status")
        assert all(a["state"] == "ready" for a in status["actors"].values())  # every actor beats
        moving = live.timeline.wait_for(lambda e: e["stage"] == "progress" and e["result"] == "ok", 30, start)
        assert moving is not None, "speech resumed when the stall ended, and the check said so"
    finally:
        control.call("config_set", changes={"fault.kind": "none", "tts.fallback": "espeak"})


def test_killing_the_web_gateway_leaves_the_media_path_alone(live):
    import signal

    start = len(live.timeline.events)
    old = live.control.call("status")["actors"]["web"]["pid"]
    live.say("The page's server goes away while I speak, and I simply keep speaking to the end.")
    assert live.timeline.wait_for(lambda e: e["stage"] == "present" and e["data"].get("kind") == "speech", 30, start)
    os.kill(old, signal.SIGKILL)
    turn = live.wait_turn_end(after=start)
    live.wait_presented(turn["utterance_id"], 60, epoch=turn["epoch"])
    events = live.timeline.events[start:]
    assert not [e for e in events if e["stage"] in ("recovery", "epoch") and e["actor"] == "supervisor"]
    assert not [e for e in events if e["stage"] == "present" and e["result"] == "underflow"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the gateway itself is back
        web = live.control.call("status")["actors"]["web"]
        if web["state"] == "ready" and web["pid"] != old:
            break
        time.sleep(0.2)
    assert web["state"] == "ready" and web["pid"] != old and web["restarts"] == 1
