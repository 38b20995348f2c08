"""Crash recovery that resumes: each actor killed (-9) mid-paragraph, and the paragraph is still
spoken whole - every word once, the same samples as a run without a crash - in the same epoch.

The comparison is sample-exact on the speech without its pauses (``spoken_pcm``): synthesis is
deterministic, so the chunk a replacement re-synthesises is the chunk that was lost, and a
word missing or said twice changes the array. The adaptive controller is off (chunk sizes
then do not depend on timing) and there is no fallback engine (a swap would change the voice).
"""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pytest

from clients.faults import fault_figures, speak_with_fault
from clients.session import private_system
from protocol.names import ACTOR_NAMES as VICTIMS
from scenes.texts import FAULT_PARAGRAPH as PARAGRAPH
from tests.media import read_mp4

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("recovery")
    sections = {"controller": {"enabled": False}, "tts": {"fallback": ""}, "supervisor": {"warm_spares": ["tts", "driver"]}}
    with private_system(tmp, sections, record=str(tmp / "recording.mp4")) as system:
        yield system


@pytest.fixture(scope="module")
def clean(system):
    session, collector = system
    run = speak_with_fault(session, collector, PARAGRAPH)
    assert len(run.speech) > 22050 * 8  # the whole paragraph, not a fragment of it
    return run


@pytest.mark.parametrize("victim", VICTIMS)
def test_an_actor_killed_mid_paragraph_is_replaced_and_every_word_is_spoken_once(system, clean, victim):
    session, collector = system
    run = speak_with_fault(session, collector, PARAGRAPH, victim)
    figures = fault_figures(run, clean)
    assert figures["duplicate_frames"] == 0, "a frame was presented twice"
    assert (figures["samples_lost"], figures["samples_doubled"]) == (0, 0), figures
    assert figures["speech_identical"], f"{victim}: the speech differs from the run without a crash"

    # The same epoch (a restart is not a barge-in), a completed recovery, a new process.
    assert run.epoch == clean.epoch and figures["epochs_started"] == 0
    done = [e["data"]["actor"] for e in run.events if e["stage"] == "recovery" and e["data"]["phase"] == "done"]
    assert done == [victim]
    status = session.control.call("status")
    assert status["actors"][victim]["pid"] != run.old_pid
    assert all(a["state"] == "ready" for a in status["actors"].values())
    # Speech carried on (a sanity bound; `personas bench faults` measures it).
    assert figures["longest_silence_s"] < 8.0, figures


def test_a_hung_actor_is_caught_by_its_heartbeats_and_nothing_is_lost(system, clean):
    """SIGSTOP: alive but silent. The supervisor notices the missing beats (within
    liveness x heartbeat_s = 3 s), kills it and places a replacement; the player's buffer
    runs dry meanwhile (a pause), but every word comes once."""
    session, collector = system
    run = speak_with_fault(session, collector, PARAGRAPH, "stitcher", how=signal.SIGSTOP)
    figures = fault_figures(run, clean)
    assert figures["speech_identical"] and figures["duplicate_frames"] == 0, figures
    failed = [e for e in run.events if e["stage"] == "actor_failed"]
    assert len(failed) == 1 and "no heartbeat" in failed[0]["data"]["why"]
    assert figures["detection_s"] <= 3.0 + 1.5 and figures["epochs_started"] == 0, figures  # 3 s of beats + a check


def test_after_every_recovery_the_next_utterance_is_spoken_whole(system, clean):
    session, collector = system
    run = speak_with_fault(session, collector, PARAGRAPH)  # the last victim (the player) had none after it yet
    assert np.array_equal(run.speech, clean.speech)


def test_the_recording_survived_the_player_restart(system, clean):
    session, _ = system
    assert session.stop() == 0
    closed = [e for e in session.timeline.events if e["stage"] == "recording_closed"]
    assert len(closed) == 1 and closed[0]["data"]["error"] is None
    assert closed[0]["data"]["parts"] == 2  # the player was replaced once: two processes recorded
    record = session.record
    assert not list(Path(record).parent.glob("recording.part*"))  # joined, parts removed
    _, audio, sample_rate, fps, durations = read_mp4(record)
    presented = [e for e in session.timeline.events if e["stage"] == "present" and e["data"].get("kind") == "speech"]
    # Everything presented is in the file: seven paragraphs of speech and the idle between them.
    assert durations["video"] >= len(presented) / fps - 1.0
    assert np.abs(audio.astype(np.int32)).max() > 1000
