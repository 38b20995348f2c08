"""Scene 9, Concurrency: two instances at once, no data races. A session manager runs two
sessions; both speak different scripts at the same time through the whole pipeline. The
verdict: each recording holds its own script's words in order and none of the other's (ASR),
both spoke at once without underflowing, and each timeline carries its own session only."""

from __future__ import annotations

import threading

from clients.asr import heard_in_order, recording_audio, transcribe, word_error_rate, words
from clients.manager import running_manager
from clients.session import Session

from .harness import Scene
from .texts import PERSONA_SCRIPT, STORY

SCRIPTS = {"story": STORY, "harbour": PERSONA_SCRIPT}
#: PocketSphinx alone hears Piper with a WER of about 0.1-0.35; mixing would break order and bring foreign words.
MIN_HEARD_IN_ORDER = 0.5
MAX_WER = 0.5


def run(scene: Scene) -> None:
    # Words of four letters or more only one script has (ASR mishears short ones into anything).
    own = {name: {w for w in words(text) if len(w) >= 4} - set().union(*(set(words(t)) for n, t in SCRIPTS.items()
                                                                          if n != name))
           for name, text in SCRIPTS.items()}
    # Two sessions whatever this machine's measured capacity: the scene is about isolation.
    sections = {"web": {"enabled": False}, "tts": {"fallback": ""}, "sessions": {"cpu_per_session": 0.01}}
    with running_manager(scene.dir / "manager", sections) as manager:
        opened = {name: manager.open(record=True) for name in SCRIPTS}
        sessions = {name: Session.attach(info, scene.dir / f"timeline-{name}.jsonl") for name, info in opened.items()}
        try:
            talks = [threading.Thread(target=s.say_and_wait, args=(SCRIPTS[name],), kwargs={"rate": 40.0, "seed": i})
                     for i, (name, s) in enumerate(sessions.items())]
            for talk in talks:
                talk.start()
            for talk in talks:
                talk.join(240)
            scene.check("both scripts were spoken to the end", not any(t.is_alive() for t in talks),
                        [t.is_alive() for t in talks], "every utterance presented")
        finally:
            reports = {name: manager.close(info["id"]) for name, info in opened.items()}
            for s in sessions.values():
                s.stop()
    # (running_manager ends every session's processes whatever happens above)

    windows = {}
    for name, s in sessions.items():
        events = s.timeline.events
        speech = [e["ts_ns"] for e in events if e["stage"] == "present" and e["data"].get("kind") == "speech"]
        windows[name] = (min(speech), max(speech)) if speech else (0, 0)
        underflows = sum(e["stage"] == "present" and e["result"] == "underflow" for e in events)
        scene.check(f"{name}: no underflow while the other speaks", underflows == 0, underflows, "0")
        chunk_ids = [e["chunk_id"] for e in events if e["stage"] == "parse"]
        stops = sum(e["stage"] == "supervisor_stopped" for e in events)
        scene.check(f"{name}: its timeline is one session's", chunk_ids == list(range(len(chunk_ids))) and stops == 1,
                    f"chunks {chunk_ids}, {stops} supervisor stop", "chunks 0..n-1 once each (one parser), one supervisor")
        foreign = [e["data"]["text"] for e in events if e["stage"] == "parse"
                   and set(words(e["data"]["text"])) & set().union(*(own[o] for o in own if o != name))]
        scene.check(f"{name}: no text of the other session on its timeline", not foreign, foreign[:2], "none")
        audio, rate = recording_audio(reports[name]["recording"])
        heard = transcribe(audio, rate)
        scene.notes[f"{name}_heard"] = heard
        in_order, wer = heard_in_order(SCRIPTS[name], heard), word_error_rate(SCRIPTS[name], heard)
        scene.check(f"{name}: its recording says its script, in order", in_order >= MIN_HEARD_IN_ORDER and wer <= MAX_WER,
                    f"{in_order:.2f} of its words in order, WER {wer:.2f}",
                    f">= {MIN_HEARD_IN_ORDER} in order, WER <= {MAX_WER}")
        others = [w for w in words(heard) if any(w in own[o] for o in own if o != name)]
        scene.check(f"{name}: none of the other script's words in its recording", not others, others, "none")
    write_artifacts(scene, sessions, reports)
    (a0, a1), (b0, b1) = windows.values()
    overlap = max(0, min(a1, b1) - max(a0, b0)) / max(1, min(a1 - a0, b1 - b0))
    scene.check("the two spoke at the same time", overlap > 0.5, f"{overlap:.0%} of the shorter speech overlapped",
                "> 50 %")


def write_artifacts(scene: Scene, sessions: dict, reports: dict) -> None:
    """The scene's usual artefacts for two sessions: one timeline (each event tagged with its
    session), the two sound tracks as the two channels of audio.wav, each recording, one plot."""
    import json
    import shutil

    import numpy as np
    import soundfile

    from clients.views import plot

    with open(scene.dir / "timeline.jsonl", "w") as out:
        for name, s in sessions.items():
            for event in s.timeline.events:
                out.write(json.dumps({**event, "session": name}, default=str) + "\n")
    tracks = [recording_audio(reports[name]["recording"]) for name in sessions]
    length = max(len(a) for a, _ in tracks)
    stereo = np.stack([np.pad(a, (0, length - len(a))) for a, _ in tracks], axis=1)
    soundfile.write(scene.dir / "audio.wav", stereo, tracks[0][1], subtype="PCM_16")
    for i, name in enumerate(sessions):
        shutil.copy(reports[name]["recording"], scene.dir / ("video.mp4" if i == 0 else f"video-{name}.mp4"))
    first = next(iter(sessions.values()))
    plot(first.timeline.events, scene.dir / "plot.png", title=f"scene: {scene.name} ({next(iter(sessions))})")
