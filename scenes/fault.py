"""Scene 8, Fault: actors are killed (SIGKILL) while a paragraph is spoken, and the listener
hears the paragraph whole: every word once, in order, with speech back within 1.5 s, in the
same epoch. The heavy actors (TTS, driver) have warm spares (the default); --quick kills
those two, the full scene every actor. Checked on the timeline, sample for sample against a
run without a crash, and by ASR."""

from __future__ import annotations

from clients.faults import fault_figures, heard_words, speak_with_fault
from protocol.names import ACTOR_NAMES

from .harness import Scene
from .texts import FAULT_PARAGRAPH

#: The listener's bound: speech back this soon after the kill.
RESUME_WITHIN_S = 1.5


def run(scene: Scene) -> None:
    victims = ("tts", "driver") if scene.quick else ACTOR_NAMES
    # Deterministic speech: no adaptive chunk sizes, no engine swap.
    session = scene.start({"controller": {"enabled": False}, "tts": {"fallback": ""},
                           "supervisor": {"warm_spares": ["tts", "driver"]}})
    sample_rate = session.config["media"]["sample_rate"]
    clean = speak_with_fault(session, scene.capture, FAULT_PARAGRAPH)
    clean_words = heard_words(clean, sample_rate)
    scene.notes["baseline_words_heard"] = clean_words
    for victim in victims:
        run_ = speak_with_fault(session, scene.capture, FAULT_PARAGRAPH, victim)
        f = fault_figures(run_, clean, (clean_words, heard_words(run_, sample_rate)))
        scene.notes[victim] = f
        scene.check(f"kill {victim}: every word once", f["speech_identical"] and f["duplicate_frames"] == 0,
                    f"{f['samples_lost']} samples lost, {f['samples_doubled']} doubled, {f['duplicate_frames']} frames twice",
                    "the same speech as without the crash, sample for sample")
        scene.check(f"kill {victim}: ASR hears the same words", f["words_lost"] == 0 and f["words_added"] == 0,
                    f"{f['words_lost']} lost, {f['words_added']} added of {f['words_heard']}", "0 lost, 0 added")
        # What the listener waits: the longest silence after the kill (the buffer may carry the
        # speech on for a while first, so the end of that silence can lie later than 1.5 s).
        scene.check(f"kill {victim}: speech back within {RESUME_WITHIN_S} s",
                    f["longest_silence_s"] is not None and f["longest_silence_s"] <= RESUME_WITHIN_S,
                    f"longest silence {f['longest_silence_s']} s, ending {f['speech_resumed_s']} s after the kill "
                    f"(detected {f['detection_s']} s, back ready {f['back_ready_s']} s)", f"<= {RESUME_WITHIN_S} s of silence")
        scene.check(f"kill {victim}: no interruption", f["epochs_started"] == 0 and f["back_ready_s"] is not None,
                    f"{f['epochs_started']} epochs started", "the same epoch; the recovery completed")
