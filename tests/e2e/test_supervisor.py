"""Acceptance for the supervisor: five actor processes, clean `down`, restarts after
kill -9 and after a hang, and a clean stop when an actor keeps failing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from protocol.control_endpoint import ControlClient
from clients.session import Session
from clients.ports import write_private_config

pytestmark = pytest.mark.e2e
ACTORS = {"parser", "tts", "stitcher", "driver", "player"}


def actor_processes(supervisor_pid: int) -> dict[str, psutil.Process]:
    found = {}
    for child in psutil.Process(supervisor_pid).children(recursive=True):
        cmd = child.cmdline()
        if "-m" in cmd and "actors" in cmd:
            found[cmd[-1]] = child
    return found


def wait_ready(control: ControlClient, replaced: tuple[str, int] | None = None, timeout: float = 120) -> dict:
    """Wait until every actor is ready (and, if given, ``replaced``'s actor has a new pid)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = control.call("status")
        if (status and status["supervisor"]["state"] == "running"
                and all(a["state"] == "ready" for a in status["actors"].values())
                and (replaced is None or status["actors"][replaced[0]]["pid"] != replaced[1])):
            return status
        time.sleep(0.2)
    raise AssertionError(f"not ready: {status}")


def spoke(session: Session, text: str) -> list[dict]:
    """Say ``text``; return the speech frames the player presented for it."""
    done = session.say_and_wait(text, rate=0)
    return [e for e in session.timeline.events if e["stage"] == "present" and e["data"].get("kind") == "speech"
            and e["utterance_id"] == done["utterance_id"] and e["epoch"] == done["epoch"] and e["data"]["rms"] > 0]


@pytest.fixture
def session(tmp_path):
    config = write_private_config(tmp_path / "personas.toml")
    s = Session(str(config), log=tmp_path / "supervisor.log")
    s.start()
    yield s
    s.stop()


def test_five_actor_processes_restart_after_kill_and_hang_then_down_leaves_none(session, tmp_path):
    status = session.control.call("status")
    supervisor_pid = status["supervisor"]["pid"]
    procs = actor_processes(supervisor_pid)
    assert set(procs) == ACTORS
    assert len({p.pid for p in procs.values()} | {supervisor_pid}) == 6

    # kill -9 while idle: restarted, and the next text is spoken.
    victim = procs["driver"]
    os.kill(victim.pid, signal.SIGKILL)
    status = wait_ready(session.control, replaced=("driver", victim.pid))
    assert status["actors"]["driver"]["restarts"] == 1
    assert status["actors"]["driver"]["pid"] != victim.pid
    assert len(spoke(session, "The driver is back.")) > 10

    # A hung actor (stopped, still alive) misses its heartbeats and is replaced.
    hung = actor_processes(supervisor_pid)["stitcher"]
    os.kill(hung.pid, signal.SIGSTOP)
    wait_ready(session.control, replaced=("stitcher", hung.pid), timeout=30)
    assert not psutil.pid_exists(hung.pid) or hung.status() == psutil.STATUS_ZOMBIE
    assert len(spoke(session, "The stitcher is back too.")) > 10
    events = session.timeline.events
    failures = [e for e in events if e["stage"] == "actor_failed"]
    assert [f["data"]["actor"] for f in failures] == ["driver", "stitcher"]
    assert "no heartbeat" in failures[1]["data"]["why"]
    # A restart is not an interruption: no new epoch, each replacement was placed by a recovery
    # that completed, and no false "unacknowledged barge-in" alarm.
    assert not [e for e in events if e["actor"] == "supervisor" and e["stage"] == "epoch"]
    assert not [e for e in events if e["stage"] == "barge_in" and e["result"] == "error"]
    done = [e["data"]["actor"] for e in events if e["stage"] == "recovery" and e["data"]["phase"] == "done"]
    assert done == ["driver", "stitcher"]
    status = session.control.call("status")
    assert status["supervisor"]["epoch"] == 0 and status["supervisor"]["recovery"]["completed"] == 2
    assert (status["actors"]["stitcher"]["restarts"], status["actors"]["stitcher"]["restarts_recent"]) == (1, 1)

    # `personas-supervisor down` leaves nothing behind.
    everyone = [supervisor_pid, *(p.pid for p in actor_processes(supervisor_pid).values())]
    config = session.config_path
    result = subprocess.run([sys.executable, "-m", "supervisor", "down", "--config", config], capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert not [pid for pid in everyone if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]


def test_status_exits_nonzero_without_a_supervisor(config_file):
    result = subprocess.run([sys.executable, "-m", "supervisor", "status", "--config", str(config_file)], capture_output=True)
    assert result.returncode != 0
    assert b"no supervisor running" in result.stderr


def test_an_actor_that_keeps_dying_stops_everything_cleanly(tmp_path):
    config = write_private_config(tmp_path / "personas.toml", {"supervisor": {"max_restarts": 2, "restart_window_s": 60.0}})
    s = Session(str(config), log=tmp_path / "supervisor.log")
    s.start()
    try:
        supervisor_pid = s.control.call("status")["supervisor"]["pid"]
        for attempt in range(3):
            parser = actor_processes(supervisor_pid)["parser"]
            os.kill(parser.pid, signal.SIGKILL)
            if attempt < 2:
                wait_ready(s.control, replaced=("parser", parser.pid))
        assert s.proc.wait(60) == 1
        assert b"parser failed 3 times" in (tmp_path / "supervisor.log").read_bytes()
        assert not psutil.pid_exists(supervisor_pid) or psutil.Process(supervisor_pid).status() == psutil.STATUS_ZOMBIE
    finally:
        s.stop()
