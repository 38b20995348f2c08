"""Crash an actor mid-paragraph and measure what a listener got: the fault benchmark, the
Fault scene and the recovery tests share this.

A run says one text; with a victim, that actor's process is killed (SIGKILL) once
``kill_after_frames`` speech frames have been presented. What comes back is read off the
captured A/V packets and the timeline, on one clock (``time.monotonic``):

- detection: kill -> the supervisor's ``actor_failed`` event;
- back ready: kill -> the recovery's ``done`` event (the replacement placed, everything rewound);
- longest silence: the longest wait between two speech frames from the kill to the end (what
  a listener waits: the figure the 1.5 s target is about);
- speech resumed: kill -> the end of that wait (0 when no wait was audible; later than the
  silence itself when the buffer carried the speech on for a while first);
- samples lost / doubled: the speech without its pauses against a run without a crash
  (synthesis is deterministic: any difference is speech missing or said twice);
- words lost / added: the same two speeches heard by PocketSphinx, word lists compared.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field

import numpy as np

from .analysis import spoken_pcm
from .capture import AVCollector
from .session import Session

#: A pause between two speech frames longer than this is heard as the speech stopping.
AUDIBLE_STOP_S = 0.12


@dataclass
class FaultRun:
    victim: str | None
    packets: list
    arrivals: list[float]
    killed_at: float | None
    old_pid: int | None
    utterance_id: int
    epoch: int
    events: list[dict] = field(default_factory=list)

    @property
    def frame_indices(self) -> list[int]:
        return [p.frame_index for p in self.packets]

    @property
    def speech(self) -> np.ndarray:
        return spoken_pcm(self.packets)


def speak_with_fault(session: Session, collector: AVCollector, text: str, victim: str | None = None,
                     kill_after_frames: int = 40, timeout: float = 120.0, how: int = signal.SIGKILL) -> FaultRun:
    """Say ``text`` at once (as a fast LLM would) and send ``how`` to ``victim`` mid-way
    (SIGKILL: a crash; SIGSTOP: a hang the heartbeats must catch); returns when the player
    has presented the utterance's last frame."""
    start = len(session.timeline.events)
    session.say(text)
    turn = session.wait_turn_end(after=start)
    uid, epoch = turn["utterance_id"], turn["epoch"]
    killed_at = old_pid = None
    if victim:
        first = collector.wait_for(lambda p: p.kind == "speech" and p.utterance_id == uid, 60)
        if first is None or collector.wait_for(lambda p: p.kind == "speech" and p.utterance_id == uid
                                               and p.frame_index >= first.frame_index + kill_after_frames, 60) is None:
            raise RuntimeError("speech did not start, or ended before the kill")
        old_pid = session.control.call("status")["actors"][victim]["pid"]
        os.kill(old_pid, how)
        killed_at = time.monotonic()
    session.wait_presented(uid, timeout, epoch=epoch)
    if collector.wait_for(lambda p: p.utterance_id == uid and p.final, 10) is None:
        raise RuntimeError("the utterance's last frame was not captured")
    mine = [(p, t) for p, t in zip(list(collector.packets), list(collector.arrivals))
            if p.kind == "speech" and p.utterance_id == uid]
    return FaultRun(victim, [p for p, _ in mine], [t for _, t in mine], killed_at, old_pid, uid, epoch,
                    session.timeline.events[start:])


def fault_figures(run: FaultRun, clean: FaultRun, transcripts: tuple[str, str] | None = None) -> dict:
    """What the listener got from ``run`` next to ``clean`` (the same text, no crash)."""
    heard, expected = run.speech, clean.speech
    same = len(heard) == len(expected) and np.array_equal(heard, expected)
    figures = {
        "victim": run.victim, "duplicate_frames": len(run.frame_indices) - len(set(run.frame_indices)),
        "speech_identical": bool(same),
        "samples_lost": max(0, len(expected) - len(heard)), "samples_doubled": max(0, len(heard) - len(expected)),
    }
    if run.killed_at is not None:
        kill_ns = run.killed_at * 1e9
        failed = [e for e in run.events if e["stage"] == "actor_failed" and e["data"].get("actor") == run.victim]
        done = [e for e in run.events if e["stage"] == "recovery" and e["data"].get("phase") == "done"
                and e["data"].get("actor") == run.victim]
        figures["detection_s"] = round((failed[0]["ts_ns"] - kill_ns) / 1e9, 3) if failed else None
        figures["back_ready_s"] = round((done[0]["ts_ns"] - kill_ns) / 1e9, 3) if done else None
        after = [t for t in run.arrivals if t >= run.killed_at]
        marks = np.array([run.killed_at, *after])
        gaps = np.diff(marks) if len(marks) > 1 else np.array([float("inf")])
        longest = int(np.argmax(gaps))
        figures["longest_silence_s"] = round(float(gaps[longest]), 3)
        figures["speech_resumed_s"] = round(float(marks[longest + 1] - run.killed_at), 3) \
            if gaps[longest] > AUDIBLE_STOP_S and np.isfinite(gaps[longest]) else 0.0
        figures["epochs_started"] = len([e for e in run.events if e["actor"] == "supervisor" and e["stage"] == "epoch"])
    if transcripts is not None:
        from .asr import word_changes

        changes = word_changes(*transcripts)
        figures.update({"words_lost": changes["lost"], "words_added": changes["added"],
                        "words_heard": changes["heard_words"]})
    return figures


def heard_words(run: FaultRun, sample_rate: int) -> str:
    from .asr import transcribe

    return transcribe(run.speech, sample_rate)
