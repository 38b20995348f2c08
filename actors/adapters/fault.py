"""Fault injection for engines (config ``[fault]``, settable live): added latency on every
call, a one-off stall, errors on every call or a single one -- so scenes and tests can make
an engine misbehave."""

from __future__ import annotations

import threading
import time

from protocol.names import FAULT_KINDS


class InjectedFault(RuntimeError):
    pass


class FaultInjector:
    """Thread-safe: the TTS loop updates it, engine worker threads consult it."""

    def __init__(self, config: dict | None = None):
        self._lock = threading.Lock()
        self._fault = {"adapter": "", "kind": "none", "ms": 0}
        if config:
            self.update(config)

    def update(self, fault: dict) -> None:
        kind = fault.get("kind", "none")
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault.kind must be one of {FAULT_KINDS}")
        with self._lock:
            self._fault = {"adapter": fault.get("adapter", ""), "kind": kind, "ms": int(fault.get("ms", 0))}

    def snapshot(self) -> dict:
        with self._lock:
            return dict(self._fault)

    def after_call(self, adapter: str, audio_ms: float, cancelled: threading.Event) -> float:
        """``slowdown``: the engine takes ``ms`` longer per second of audio it produced, the way
        a busy GPU or a throttled server slows in proportion to the work. Returns the ms added."""
        with self._lock:
            fault = dict(self._fault)
        if fault["adapter"] != adapter or fault["kind"] != "slowdown":
            return 0.0
        started = time.perf_counter()
        cancelled.wait(fault["ms"] * audio_ms / 1e6)
        return (time.perf_counter() - started) * 1000

    def before_call(self, adapter: str, cancelled: threading.Event) -> dict | None:
        """Apply the fault for one engine call (sleeps or raises); returns what was applied."""
        with self._lock:
            fault = dict(self._fault)
            if fault["adapter"] != adapter or fault["kind"] in ("none", "slowdown"):
                return None
            if fault["kind"] in ("stall", "error_once"):  # one-off
                self._fault["kind"] = "none"
        if fault["kind"] in ("latency", "stall"):
            cancelled.wait(fault["ms"] / 1000)
        elif fault["kind"] in ("error", "error_once"):
            raise InjectedFault(f"injected error in {adapter}")
        return fault
