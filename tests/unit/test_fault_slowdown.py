"""An injected slowdown is part of the engine's measured synthesis time, as a busy GPU's
would be: the rate controller and the engine's deadline see a slower engine."""

import threading
import time

import numpy as np
import zmq

from actors.adapters import Synthesis
from actors.adapters.fault import FaultInjector
from actors.engine_pool import SynthesisWorker
from actors.lips import LipTiming
from protocol import TextChunk


class ToneEngine:
    """A real (trivial) engine: one second of a 220 Hz tone per call, timed like an adapter."""

    name = "tone"
    sample_rate = 16000

    def synthesize(self, text, voice):
        started = time.perf_counter()
        pcm = (np.sin(np.arange(self.sample_rate) * 2 * np.pi * 220 / self.sample_rate) * 8000).astype(np.int16)
        return Synthesis(pcm, self.sample_rate, render_ms=(time.perf_counter() - started) * 1000, timing="none")

    def new_call(self):
        pass

    def cancel(self):
        pass


def synthesise_once(faults: FaultInjector) -> Synthesis:
    zctx = zmq.Context()
    worker = SynthesisWorker(zctx, ToneEngine(), faults, LipTiming({"driver": {"lips": "alignment"}}))
    try:
        worker.submit(TextChunk(epoch=0, utterance_id=0, sequence_id=0, text="one second", boundary=".", final=True), None)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            done = worker.collect()
            if done:
                return done[0][1]
            time.sleep(0.01)
        raise AssertionError("the worker did not answer in 10 s")
    finally:
        worker.close()
        zctx.term()


def test_a_slowdown_is_measured_as_synthesis_time():
    plain = synthesise_once(FaultInjector())
    slowed = synthesise_once(FaultInjector({"adapter": "tone", "kind": "slowdown", "ms": 300}))
    assert plain.render_ms < 150
    assert slowed.render_ms >= 290  # 300 ms more per second of audio, and this was one second
    assert slowed.duration_ms == plain.duration_ms == 1000


def test_a_slowdown_for_another_engine_adds_nothing():
    assert FaultInjector({"adapter": "piper", "kind": "slowdown", "ms": 300}).after_call(
        "tone", 1000.0, threading.Event()) == 0.0
