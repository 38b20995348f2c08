"""A whole running system seen from outside: a `personas-supervisor up` subprocess plus a
timeline subscriber and a token feeder. `personas run`, the benchmarks and the tests
drive Personas through this, exactly as a user would from a terminal."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

from protocol import tokenize_like_llm
from protocol.config import load_config
from protocol.control_endpoint import EXIT_WITH_PARENT_ENV, ControlClient
from protocol.security import client_keys

from .feeder import Feeder
from .timeline import TimelineRecorder


class SessionError(RuntimeError):
    pass


class Session:
    def __init__(self, config_path: str | None = None, overrides: tuple[str, ...] | list[str] = (),
                 record: str | None = None, timeline_jsonl: str | Path | None = None,
                 log: str | Path | None = None, env: dict | None = None):
        self.config_path = config_path
        self.overrides = list(overrides)
        self.config = load_config(config_path, self.overrides)
        self.record = record
        self.timeline_jsonl = timeline_jsonl
        self.log_path = log
        self.env = env  # extra environment for the supervisor (and so for every actor)
        self.proc: subprocess.Popen | None = None
        self.timeline: TimelineRecorder | None = None
        self.curve = client_keys(self.config)  # None unless security.curve_dir is set
        self.control = ControlClient(self.config["endpoints"]["control"], curve=self.curve)
        self._feeder: Feeder | None = None
        self._log_file = None
        self._stopped = False

    @classmethod
    def attach(cls, opened: dict, timeline_jsonl: str | Path | None = None, config_path: str | None = None) -> "Session":
        """A session a session manager opened (its POST /sessions reply): this client feeds it,
        watches its timeline and interrupts it; the manager starts and closes it."""
        session = cls(config_path)
        session.config["endpoints"].update(opened["endpoints"])
        session.control = ControlClient(opened["endpoints"]["control"], token=opened["token"], curve=session.curve)
        session.timeline = TimelineRecorder(opened["endpoints"]["timeline"], timeline_jsonl, curve=session.curve)
        session.timeline.wait_connected(5)
        session.opened = opened
        return session

    @property
    def endpoints(self) -> dict:
        return self.config["endpoints"]

    def start(self, ready_timeout: float = 180.0) -> "Session":
        if ControlClient(self.endpoints["control"], timeout_ms=300, curve=self.curve).call("ping") is not None:
            raise SessionError(f"a supervisor is already running at {self.endpoints['control']}; "
                               "stop it (`personas-supervisor down`) or use other endpoints")
        cmd = [sys.executable, "-m", "supervisor", "up"]
        if self.config_path:
            cmd += ["--config", str(self.config_path)]
        for item in self.overrides:
            cmd += ["--set", item]
        if self.record:
            Path(self.record).parent.mkdir(parents=True, exist_ok=True)
            cmd += ["--record", str(self.record)]
        self.timeline = TimelineRecorder(self.endpoints["timeline"], self.timeline_jsonl, curve=self.curve)
        if self.log_path:
            Path(self.log_path).parent.mkdir(parents=True, exist_ok=True)
            self._log_file = open(self.log_path, "ab")
        # The system is this client's: if the client dies (a bench killed at its timeout), the
        # supervisor stops its actors instead of running on as an orphan.
        env = {**os.environ, EXIT_WITH_PARENT_ENV: "1", **(self.env or {})}
        self.proc = subprocess.Popen(cmd, stdout=self._log_file, stderr=self._log_file, env=env)
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SessionError(f"supervisor exited with code {self.proc.returncode} during start-up"
                                   + (f" (log: {self.log_path})" if self.log_path else ""))
            reply = ControlClient(self.endpoints["control"], timeout_ms=500, curve=self.curve).call("status")
            if reply and reply["supervisor"]["state"] == "running":
                self.timeline.wait_connected(5)
                return self
            time.sleep(0.2)
        self.stop()
        raise SessionError(f"actors not ready after {ready_timeout:.0f}s")

    @property
    def feeder(self) -> Feeder:
        if self._feeder is None:
            self._feeder = Feeder(self.endpoints["ingress"], curve=self.curve)
        return self._feeder

    def say(self, text: str, rate: float = 0.0, seed: int = 0) -> int:
        """Feed ``text`` as LLM-like tokens plus ``end``; returns the token count."""
        return self.feeder.feed(tokenize_like_llm(text, seed), rate=rate)

    def say_in_background(self, text: str, rate: float, seed: int = 0):
        """Feed like a live LLM while the caller watches the timeline; returns the thread."""
        import threading

        feeder = Feeder(self.endpoints["ingress"], curve=self.curve)
        tokens = tokenize_like_llm(text, seed)

        def run() -> None:
            feeder.feed(tokens, rate=rate)
            feeder.close()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    def barge_in(self, reason: str, timeout: float = 10.0) -> int:
        """Interrupt through the control endpoint and wait until every actor has dropped the old
        epoch (the supervisor's acknowledgement event); returns the new epoch."""
        reply = self.control.call("barge_in", reason=reason)
        if reply is None or not reply.get("ok"):
            raise SessionError(f"barge_in refused: {reply}")
        epoch = reply["epoch"]
        if self.timeline.wait_for(lambda e: e["actor"] == "supervisor" and e["stage"] == "barge_in"
                                  and e["epoch"] == epoch, timeout) is None:
            raise SessionError(f"epoch {epoch} was not acknowledged within {timeout:.0f}s")
        return epoch

    def wait_turn_end(self, timeout: float = 30.0, after: int = 0) -> dict:
        event = self.timeline.wait_for(lambda e: e["actor"] == "parser" and e["stage"] == "turn_end", timeout, after)
        if event is None:
            raise SessionError("the parser never reported the end of the turn")
        return event

    def wait_presented(self, utterance_id: int, timeout: float, epoch: int | None = None) -> dict:
        """Block until the player has presented the last frame of ``utterance_id``."""
        event = self.timeline.wait_for(
            lambda e: e["stage"] == "utterance_presented" and e["utterance_id"] == utterance_id
            and (epoch is None or e["epoch"] >= epoch), timeout)  # a barge-in may move it to a newer epoch
        if event is None:
            raise SessionError(f"utterance {utterance_id} was not presented within {timeout:.0f}s")
        return event

    def say_and_wait(self, text: str, rate: float = 0.0, seed: int = 0, timeout: float | None = None) -> dict:
        start = len(self.timeline.events)
        self.say(text, rate, seed)
        turn = self.wait_turn_end(after=start, timeout=60 + (len(text) / rate if rate else 0))
        budget = timeout if timeout is not None else 60 + len(text) * 0.15
        return self.wait_presented(turn["utterance_id"], budget, epoch=turn["epoch"])

    def stop(self, timeout: float = 60.0) -> int | None:
        """Down, wait for the supervisor, close the timeline (its events stay readable).
        Stopping twice is stopping once."""
        if self._stopped:
            return self.proc.returncode if self.proc is not None else None
        self._stopped = True
        if self._feeder is not None:
            self._feeder.close()
            self._feeder = None
        code = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.control.call("down")
                try:
                    code = self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    code = self.proc.wait()
            else:
                code = self.proc.returncode
        if self.timeline is not None:
            if code is not None:  # the supervisor's last word: every actor's events came before it
                self.timeline.wait_for(lambda e: e["stage"] == "supervisor_stopped", 2)
            self.timeline.close()
        if self._log_file:
            self._log_file.close()
        return code

    def __enter__(self) -> "Session":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@contextlib.contextmanager
def private_system(workdir: str | Path, sections: dict | None = None, overrides: list[str] | tuple[str, ...] = (),
                   capture: bool = True, record: str | None = None):
    """A running system on fresh loopback ports (config and supervisor log in ``workdir``),
    with a capture of what the player presents (speech pixels kept, idle ones dropped);
    yields ``(session, collector)`` and stops both, whatever happens."""
    from .capture import AVCollector
    from .ports import write_private_config

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    config = write_private_config(workdir / "personas.toml", sections)
    session = Session(str(config), list(overrides), log=workdir / "supervisor.log", record=record)
    session.start()
    collector = None
    try:
        if capture:
            collector = AVCollector(session.endpoints["av_out"], idle_pixels=False, curve=session.curve)
            if not collector.wait_connected(10):
                raise SessionError("the player's av_out did not accept the capture's connection")
        yield session, collector
    finally:
        if collector is not None:
            collector.close()
        session.stop()
