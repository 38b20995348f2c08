"""Scale-out on Ray: a local two-node cluster on 127.0.0.1 (a head and a second node, one
session's CPU each), two sessions placed on different nodes and both spoken; killing one
node's raylet ends only its session, with the reason, and the other keeps speaking."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from clients.asr import heard_in_order, recording_audio, transcribe
from clients.manager import ManagerError, running_manager
from clients.session import Session
from protocol.transport import free_ports

pytestmark = pytest.mark.e2e
ray = pytest.importorskip("ray")

TEXTS = ["The morning was cold and bright. We walked down to the river before breakfast.",
         "My sister carried the basket with bread and cheese, and we went home for lunch."]


def ray_cli(*args: str, env: dict) -> None:
    done = subprocess.run([str(Path(sys.executable).parent / "ray"), *args], env=env, timeout=180,
                          capture_output=True, text=True)
    assert done.returncode == 0, f"ray {args[0]} failed: {done.stdout[-2000:]} {done.stderr[-2000:]}"


def raylets() -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        if proc.info["name"] == "raylet" or any(a.endswith("/raylet") for a in (proc.info["cmdline"] or [])[:1]):
            found.append(proc)
    return found


def node_id_of(raylet: psutil.Process) -> str:
    return next((arg.split("=", 1)[1] for arg in raylet.cmdline() if arg.startswith("--node_id=")), "")


@pytest.fixture
def cluster():
    """Head and second node, 1 CPU each, on loopback; `ray stop` whatever happens. Ray's
    directory is short: its Unix socket paths must fit in 107 bytes."""
    import shutil
    import tempfile

    port = free_ports(1)[0]
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_DISABLE_DOCKER_CPU_WARNING": "1"}
    try:
        ray_cli("start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=1",
                "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}", env=env)
        ray_cli("start", f"--address=127.0.0.1:{port}", "--node-ip-address=127.0.0.1", "--num-cpus=1",
                "--disable-usage-stats", env=env)
        yield f"127.0.0.1:{port}", env
    finally:
        subprocess.run([str(Path(sys.executable).parent / "ray"), "stop", "--force"], env=env, timeout=120,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(temp, ignore_errors=True)


def test_two_sessions_on_two_nodes_and_a_dead_node_ends_only_its_session(cluster, tmp_path):
    address, env = cluster
    sections = {"web": {"enabled": False}, "tts": {"fallback": ""}, "sessions": {"ray_cpus_per_session": 1.0}}
    with running_manager(tmp_path / "manager", sections, ray_address=address, env=env, ready_timeout=180) as manager:
        opened = [manager.open(record=True) for _ in TEXTS]
        assert opened[0]["node"] != opened[1]["node"], "Ray put both sessions on one node"
        with pytest.raises(ManagerError) as refused:  # both nodes' CPU is declared: a third does not fit
            manager.open()
        assert refused.value.status == 503 and "free CPU" in refused.value.body["error"]
        sessions = [Session.attach(info) for info in opened]
        try:
            for session, text in zip(sessions, TEXTS):
                session.say_in_background(text, rate=40.0)
            for session in sessions:
                session.wait_presented(0, 120)
            # The head node hosts the manager's driver; the session on the other node loses its raylet.
            head = manager.call("GET", "/health")["capacity"]
            victim = next(i for i, info in enumerate(opened) if info["node"] != head.get("head_node"))
            raylet = next(r for r in raylets() if node_id_of(r) == opened[victim]["node"])
            raylet.send_signal(signal.SIGKILL)
            failed = manager.wait_event(lambda e: e["event"] == "failed" and e["session"] == opened[victim]["id"], 90)
            assert failed is not None and "Ray node" in failed["reason"]
            with pytest.raises(ManagerError) as gone:
                manager.session(opened[victim]["id"])
            assert gone.value.status == 410 and "Ray node" in gone.value.body["error"]
            survivor = sessions[1 - victim]
            assert manager.session(opened[1 - victim]["id"])["ok"]
            survivor.say_and_wait("And I am still here, speaking on my own node.", rate=40.0)
            deadline = time.monotonic() + 60  # the lost session's supervisor stops with its Ray worker
            while time.monotonic() < deadline and psutil.pid_exists(opened[victim]["pid"]):
                time.sleep(0.5)
            assert not psutil.pid_exists(opened[victim]["pid"]) or \
                psutil.Process(opened[victim]["pid"]).status() == psutil.STATUS_ZOMBIE
        finally:
            report = manager.close(opened[1 - victim]["id"]) if "victim" in locals() else None
            for session in sessions:
                session.stop()
    if report is not None:
        audio, rate = recording_audio(report["recording"])
        heard = transcribe(audio, rate)
        assert heard_in_order(TEXTS[1 - victim], heard) >= 0.5, heard
