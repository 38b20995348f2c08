"""A session manager seen from outside: `personas serve` as a subprocess, and a client of
its HTTP API. Tests, the Concurrency scene and `personas bench sessions` use these."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from gateway.guard import TOKEN_HEADER
from protocol.config import to_toml
from protocol.control_endpoint import read_token
from protocol.transport import free_ports


class ManagerError(RuntimeError):
    def __init__(self, status: int, body: dict, headers: dict | None = None):
        super().__init__(f"HTTP {status}: {body.get('error', body)}")
        self.status, self.body, self.headers = status, body, headers or {}


class ManagerClient:
    def __init__(self, url: str, token: str):
        self.url, self.token = url.rstrip("/"), token

    def call(self, method: str, path: str, body: dict | None = None, timeout: float = 240.0) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={TOKEN_HEADER: self.token, "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as reply:
                return json.loads(reply.read() or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                payload = json.loads(exc.read() or b"{}")
            except ValueError:
                payload = {"error": exc.reason}
            raise ManagerError(exc.code, payload, dict(exc.headers)) from None

    def open(self, **choices) -> dict:
        return self.call("POST", "/sessions", choices)

    def close(self, session_id: str) -> dict:
        return self.call("DELETE", f"/sessions/{session_id}")

    def session(self, session_id: str) -> dict:
        return self.call("GET", f"/sessions/{session_id}")

    def sessions(self) -> dict:
        return self.call("GET", "/sessions")

    def events(self, after: int = 0, wait: float = 0.0) -> dict:
        return self.call("GET", f"/events?after={after}&wait={wait}", timeout=wait + 10)

    def wait_event(self, predicate, timeout: float) -> dict | None:
        deadline, after = time.monotonic() + timeout, 0
        while time.monotonic() < deadline:
            reply = self.events(after, wait=min(5.0, max(0.1, deadline - time.monotonic())))
            for event in reply["events"]:
                if predicate(event):
                    return event
            after = reply["next"]
        return None


@contextlib.contextmanager
def running_manager(workdir: str | Path, sections: dict | None = None, ray_address: str = "",
                    env: dict | None = None, ready_timeout: float = 120.0):
    """`personas serve` on a free loopback port with its state in ``workdir``; yields a
    ManagerClient and stops the manager (and so every session) whatever happens."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_ports(1)[0]
    sections = {**(sections or {})}
    sections["sessions"] = {"port": port, **sections.get("sessions", {})}
    config = workdir / "manager.toml"
    config.write_text(to_toml(sections))
    state = workdir / "state"
    cmd = [sys.executable, "-m", "supervisor.personas_cli_entry", "serve", "--config", str(config),
           "--state-dir", str(state)] + (["--ray", ray_address] if ray_address else [])
    log = open(workdir / "manager.log", "ab")
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, env={**os.environ, **(env or {})}, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        client = None
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"personas serve exited with {proc.returncode} (log: {workdir / 'manager.log'})")
            token = read_token(url, state)
            if token:
                try:
                    urllib.request.urlopen(url + "/health", timeout=2).read()
                    client = ManagerClient(url, token)
                    break
                except OSError:
                    pass
            time.sleep(0.2)
        if client is None:
            raise RuntimeError(f"personas serve did not answer within {ready_timeout:.0f} s")
        client.proc, client.state_dir = proc, state
        yield client
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
        kill_sessions_of(state)


def kill_sessions_of(state: Path) -> list[int]:
    """Kill what is left of the manager's sessions (they run in their own process groups and
    stop with it; this is for the path where one did not): every process whose state directory
    lies under ``state``."""
    import psutil

    killed = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("PERSONAS_STATE_DIR", "").startswith(str(state)):
                proc.kill()
                killed.append(proc.pid)
        except (psutil.Error, OSError):
            continue
    return killed

