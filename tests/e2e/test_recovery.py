"""Crash recovery that resumes: each actor killed (-9) mid-paragraph, and the paragraph is still
spoken whole - every word once, the same samples as a run without a crash - in the same epoch.

The comparison is sample-exact on the speech without its pauses (``spoken_pcm``): synthesis is
deterministic, so the chunk a replacement re-synthesises is the chunk that was lost, and a
word missing or said twice changes the array. The adaptive controller is off (chunk sizes
then do not depend on timing) and there is no fallback engine (a swap would change the voice).
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from clients.analysis import spoken_pcm
from clients.capture import AVCollector
from clients.ports import write_private_config
from clients.session import Session

pytestmark = pytest.mark.e2e

PARAGRAPH = ("The lighthouse keeper climbed the stairs every evening at dusk. He polished the great lens until it "
             "shone, then lit the lamp and watched the ships pass. Some nights the fog rolled in so thick that he "
             "could not see the water below. On those nights he rang the bell every minute until morning came.")
#: Speech frames presented before the kill: well into the paragraph, well before its end.
KILL_AFTER_FRAMES = 40
VICTIMS = ("parser", "tts", "stitcher", "driver", "player")


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("recovery")
    config = write_private_config(tmp / "personas.toml", {
        "controller": {"enabled": False}, "tts": {"fallback": ""},
        "supervisor": {"warm_spares": ["tts", "driver"]}})
    session = Session(str(config), log=tmp / "supervisor.log")
    session.start()
    collector = AVCollector(session.endpoints["av_out"], idle_pixels=False)
    try:
        assert collector.wait_connected(10)
        yield session, collector
    finally:
        collector.close()
        session.stop()


def speak(session: Session, collector: AVCollector, victim: str | None = None) -> dict:
    """Say the paragraph (killing ``victim`` once KILL_AFTER_FRAMES speech frames are out);
    returns its speech packets, their arrival times and the kill's time."""
    start = len(session.timeline.events)
    session.say(PARAGRAPH)
    turn = session.wait_turn_end(after=start)
    uid, epoch = turn["utterance_id"], turn["epoch"]
    killed_at, old_pid = None, None
    if victim:
        first = collector.wait_for(lambda p: p.kind == "speech" and p.utterance_id == uid, 60)
        assert first is not None, "speech never started"
        assert collector.wait_for(lambda p: p.kind == "speech" and p.utterance_id == uid
                                  and p.frame_index >= first.frame_index + KILL_AFTER_FRAMES, 60)
        old_pid = session.control.call("status")["actors"][victim]["pid"]
        os.kill(old_pid, signal.SIGKILL)
        killed_at = time.monotonic()
    session.wait_presented(uid, 120, epoch=epoch)
    assert collector.wait_for(lambda p: p.utterance_id == uid and p.final, 10) is not None
    mine = [(p, t) for p, t in zip(list(collector.packets), list(collector.arrivals))
            if p.kind == "speech" and p.utterance_id == uid]
    return {"packets": [p for p, _ in mine], "arrivals": [t for _, t in mine], "killed_at": killed_at,
            "old_pid": old_pid, "uid": uid, "epoch": epoch, "events": session.timeline.events[start:]}


@pytest.fixture(scope="module")
def clean(system):
    session, collector = system
    run = speak(session, collector)
    assert len(spoken_pcm(run["packets"])) > 22050 * 8  # the whole paragraph, not a fragment of it
    return run


@pytest.mark.parametrize("victim", VICTIMS)
def test_an_actor_killed_mid_paragraph_is_replaced_and_every_word_is_spoken_once(system, clean, victim):
    session, collector = system
    run = speak(session, collector, victim)

    indices = [p.frame_index for p in run["packets"]]
    assert len(indices) == len(set(indices)), "a frame was presented twice"
    expected, heard = spoken_pcm(clean["packets"]), spoken_pcm(run["packets"])
    assert len(heard) == len(expected), (f"{victim}: {len(heard) - len(expected):+d} samples of speech "
                                         "(negative: lost, positive: said twice)")
    assert np.array_equal(heard, expected), f"{victim}: the speech differs from the run without a crash"

    # The same epoch (a restart is not a barge-in), a completed recovery, a new process.
    events = run["events"]
    assert run["epoch"] == clean["epoch"]
    assert not [e for e in events if e["actor"] == "supervisor" and e["stage"] == "epoch"]
    assert [e["data"]["actor"] for e in events if e["stage"] == "recovery" and e["data"]["phase"] == "done"] == [victim]
    status = session.control.call("status")
    assert status["actors"][victim]["pid"] != run["old_pid"]
    assert all(a["state"] == "ready" for a in status["actors"].values())

    # Speech carried on: the longest wait between two speech frames after the kill (a sanity
    # bound; `personas bench faults` measures it).
    after = [t for t in run["arrivals"] if t >= run["killed_at"]]
    gaps = np.diff([run["killed_at"], *after])
    assert after and gaps.max() < 8.0, f"{victim}: {gaps.max():.2f} s without speech"
