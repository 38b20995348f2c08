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
    own = {name: set(words(text)) - set().union(*(set(words(t)) for n, t in SCRIPTS.items() if n != name))
           for name, text in SCRIPTS.items()}
    sections = {"web": {"enabled": False}, "tts": {"fallback": ""}}
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

    windows = {}
    for name, s in sessions.items():
        events = s.timeline.events
        speech = [e["ts_ns"] for e in events if e["stage"] == "present" and e["data"].get("kind") == "speech"]
        windows[name] = (min(speech), max(speech)) if speech else (0, 0)
        underflows = sum(e["stage"] == "present" and e["result"] == "underflow" for e in events)
        scene.check(f"{name}: no underflow while the other speaks", underflows == 0, underflows, "0")
        starts = [e for e in events if e["stage"] == "supervisor_start"]
        ingress = {e["data"]["config"]["endpoints"]["ingress"] for e in starts}
        scene.check(f"{name}: its timeline is its own session's", ingress == {opened[name]["endpoints"]["ingress"]},
                    sorted(ingress), f"one supervisor, at {opened[name]['endpoints']['ingress']}")
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
    (a0, a1), (b0, b1) = windows.values()
    overlap = max(0, min(a1, b1) - max(a0, b0)) / max(1, min(a1 - a0, b1 - b0))
    scene.check("the two spoke at the same time", overlap > 0.5, f"{overlap:.0%} of the shorter speech overlapped",
                "> 50 %")
