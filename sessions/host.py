"""One session on one machine: its own `personas-supervisor up` (five actors and a web
gateway) on fresh ports, its own state directory (control token, config, log, recording).

Blocking code: the session manager calls it from worker threads, a Ray actor calls it
from its own process on the node that hosts the session. It never imports client tooling.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from persona.voice import check_voice
from protocol.config import copy_config, load_config, to_toml
from protocol.control_endpoint import EXIT_WITH_PARENT_ENV, ControlClient, read_token
from protocol.names import ENDPOINT_NAMES, INTERNAL_ENDPOINTS, PUBLIC_ENDPOINTS
from protocol.security import client_keys, is_loopback
from protocol.transport import free_ports

#: What `stop` waits for beyond the supervisor's own stop timeout before it kills the tree.
STOP_GRACE_S = 10.0


class SessionStartError(RuntimeError):
    pass


class SessionRefused(ValueError):
    """`up` refused the session's config before any actor started (an unknown persona ...)."""


#: Ports handed to sessions of this process that are still running: a session starting while
#: another one's actors have not bound yet must not be given the same free port.
_RESERVED: set[int] = set()
_RESERVED_LOCK = threading.Lock()


def unreserved_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    for _ in range(100):
        ports = free_ports(n, host)
        with _RESERVED_LOCK:
            if not _RESERVED.intersection(ports):
                _RESERVED.update(ports)
                return ports
    raise SessionStartError("no free ports that another session does not hold")


def release_ports(config: dict) -> None:
    ports = {int(e.rsplit(":", 1)[1]) for e in config["endpoints"].values() if e.startswith("tcp://")}
    with _RESERVED_LOCK:
        _RESERVED.difference_update(ports | {int(config["web"]["port"])})


def session_config(base: dict, session_id: str, root: Path, host: str, choices: dict) -> dict:
    """The config one session runs with: the manager's, on fresh ports (public ones on
    ``host``, internal ones on loopback), its web page on its own port, its recording in
    its directory, and the client's choices (persona, voice, recording)."""
    config = copy_config(base)
    # One call per address, so no two ports are the same (ports freed by one call can come back in the next).
    n_public = len(PUBLIC_ENDPOINTS) + 1
    if host == "127.0.0.1":
        ports = unreserved_ports(n_public + len(INTERNAL_ENDPOINTS))
        public, inside = ports[:n_public], iter(ports[n_public:])
    else:
        public, inside = unreserved_ports(n_public, host), iter(unreserved_ports(len(INTERNAL_ENDPOINTS)))
    addresses = dict(zip(PUBLIC_ENDPOINTS, public))
    for name in ENDPOINT_NAMES:
        config["endpoints"][name] = (f"tcp://{host}:{addresses[name]}" if name in addresses
                                     else f"tcp://127.0.0.1:{next(inside)}")
    config["web"]["host"], config["web"]["port"] = host, public[-1]
    config["supervisor"]["warm_spares"] = list(base["sessions"]["warm_spares"])
    config["player"]["record"] = str(root / f"{session_id}.mp4") if choices.get("record") else ""
    if choices.get("persona") is not None:
        config["persona"]["id"] = str(choices["persona"])
    if choices.get("voice") is not None:
        config["voice"]["persona"] = str(choices["voice"])
    return config


class SessionProcess:
    def __init__(self, session_id: str, base_config: dict, root: str | os.PathLike, host: str, choices: dict):
        self.id = session_id
        self.dir = Path(root) / session_id
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.host = host
        self.config = session_config(base_config, session_id, self.dir, host, choices)
        try:
            self.config_path = self.dir / "personas.toml"
            self.config_path.write_text(to_toml(self.config))
            load_config(self.config_path)  # a bad choice fails here, not in a crash-looping supervisor
            problem = check_voice(self.config)
            if problem:
                raise SessionRefused(f"voice: {problem}")
        except BaseException:
            release_ports(self.config)
            raise
        self.proc: subprocess.Popen | None = None
        self.curve = client_keys(self.config)
        self.token = ""
        self._ps: psutil.Process | None = None
        self._children: dict[int, psutil.Process] = {}

    @property
    def endpoints(self) -> dict:
        return {name: self.config["endpoints"][name] for name in PUBLIC_ENDPOINTS}

    @property
    def web_url(self) -> str:
        web = self.config["web"]
        return f"http://{web['host']}:{web['port']}/" if web["enabled"] else ""

    def control(self, timeout_ms: int = 1000) -> ControlClient:
        return ControlClient(self.endpoints["control"], timeout_ms=timeout_ms, token=self.token, curve=self.curve)

    def start(self, timeout_s: float) -> dict:
        """Start the supervisor and wait until every actor is ready; what clients need to know."""
        env = {**os.environ, "PERSONAS_STATE_DIR": str(self.dir), EXIT_WITH_PARENT_ENV: "1",
               "TMPDIR": str(self.dir), "PYTHONUNBUFFERED": "1"}
        log = open(self.dir / "supervisor.log", "ab")
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "supervisor", "up", "--config", str(self.config_path)],
                                         stdout=log, stderr=log, env=env, start_new_session=True)
        finally:
            log.close()
        self._ps = psutil.Process(self.proc.pid)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                release_ports(self.config)
                said = self.last_words()
                if said.startswith("Error: "):  # click's form: `up` refused before starting anything
                    raise SessionRefused(said[len("Error: "):])
                raise SessionStartError(f"session {self.id}: supervisor exited with code {self.proc.returncode} "
                                        f"while starting: {said} ({self.dir / 'supervisor.log'})")
            if not self.token:
                self.token = read_token(self.endpoints["control"], self.dir)
            reply = self.control(500).call("status") if self.token else None
            if reply and reply["supervisor"]["state"] == "running":
                return self.describe()
            time.sleep(0.2)
        self.kill()
        raise SessionStartError(f"session {self.id}: actors not ready after {timeout_s:.0f} s")

    def last_words(self) -> str:
        """The supervisor log's last line (why it exited), at most 300 characters."""
        try:
            lines = (self.dir / "supervisor.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1][:300] if lines else ""

    def describe(self) -> dict:
        return {"id": self.id, "endpoints": self.endpoints, "token": self.token, "web_url": self.web_url,
                "pid": self.proc.pid if self.proc else None, "host": self.host, "dir": str(self.dir),
                "recording": self.config["player"]["record"]}

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def status(self) -> dict | None:
        return self.control(1000).call("status") if self.alive() else None

    def usage(self) -> dict:
        """CPU (cores, since the last call) and RSS of the supervisor and everything under it."""
        if self._ps is None or not self.alive():
            return {"cpu": 0.0, "rss_mb": 0.0}
        cpu, rss = 0.0, 0
        try:
            procs = [self._ps, *self._ps.children(recursive=True)]
        except psutil.NoSuchProcess:
            return {"cpu": 0.0, "rss_mb": 0.0}
        known = {}
        for proc in procs:
            proc = self._children.get(proc.pid, proc)  # the same object keeps cpu_percent's last sample
            known[proc.pid] = proc
            try:
                cpu += proc.cpu_percent(None) / 100.0
                rss += proc.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        self._children = known
        return {"cpu": round(cpu, 3), "rss_mb": round(rss / 2**20, 1)}

    def stop(self, reason: str = "close", timeout_s: float | None = None) -> dict:
        """Stop gracefully: what the parser was sent and will not speak comes back in the report."""
        if not self.alive():
            release_ports(self.config)
            return {"exit_code": self.proc.returncode if self.proc else None, "unspoken": None}
        wait_s = timeout_s if timeout_s is not None else float(self.config["supervisor"]["stop_timeout_s"]) + STOP_GRACE_S
        reply = self.control(int(wait_s * 1000)).call("down", reason=reason, wait=True) or {}
        try:
            code = self.proc.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.proc.wait()
        release_ports(self.config)
        return {"exit_code": code, "unspoken": reply.get("unspoken")}

    def kill(self) -> None:
        """The whole process group, now (the supervisor started it as its own session)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        release_ports(self.config)


def check_host(config: dict, host: str) -> str:
    """"" or why sessions cannot bind their public endpoints on ``host`` with this config."""
    if not is_loopback(f"tcp://{host}:1") and not config["security"]["curve_dir"]:
        return f"sessions.public_host {host} is not loopback: set security.curve_dir (`personas keys gen`)"
    return ""
