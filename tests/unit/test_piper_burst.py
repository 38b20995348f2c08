"""Piper's first-chunk burst: the session's threads spread over the cores or kept on one give
the same audio, byte for byte (replay and crash recovery depend on it)."""

import copy

import pytest

from actors.adapters.piper import PiperAdapter
from persona.voice import load_voice
from protocol.config import load_config

TEXTS = ("Audio is the clock.", "Hello there, it is good to see you again.", "And the first one is short.")


@pytest.fixture(scope="module")
def adapter():
    config = copy.deepcopy(load_config(None, []))
    config["voice"]["threads"] = 2
    piper = PiperAdapter(config)
    piper.load()
    return piper


def test_spread_and_one_core_give_the_same_audio(adapter):
    voice = load_voice("brisk")  # natural prosody: seeded noise too
    if not adapter.placement.enabled or len(adapter.placement.cores) < 2:
        pytest.skip("needs Linux and two cores")
    idle = adapter.placement.core_idle
    adapter.placement.core_idle = lambda threads: True  # spread whatever the machine is doing
    try:
        for text in TEXTS:
            adapter.urgent = False
            calm = adapter.synthesize(text, voice)
            assert adapter.placement.spread is False
            adapter.urgent = True
            burst = adapter.synthesize(text, voice)
            assert adapter.placement.spread is True
            assert burst.pcm.tobytes() == calm.pcm.tobytes() and burst.phonemes == calm.phonemes, text
    finally:
        adapter.placement.core_idle = idle
        adapter.urgent = False


def test_a_burst_needs_an_idle_core(adapter):
    placement = adapter.placement
    if not placement.enabled:
        pytest.skip("Linux only")
    assert placement.place(False, 2) is False  # not asked: one core
    assert placement.place(True, 1) is False  # one thread has nothing to spread
    assert isinstance(placement.core_idle(2), bool)


def test_the_calling_thread_runs_where_it_ran_before(adapter):
    import os

    before = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    adapter.synthesize("Where was I?", load_voice("joe"))
    if before is not None:
        assert os.sched_getaffinity(0) == before
