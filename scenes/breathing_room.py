"""Scene 1, Breathing Room: short replies back to back. Each answer's first audio arrives
while the pause after the previous one would still feel natural, and nothing on the hot
path touches the disk (checked on the file system and in /proc, not on trust)."""

from __future__ import annotations

import time
from pathlib import Path

from actors.sinks import part_path

from .harness import FileWatch, Scene, shared_memory_in_use, written_files
from .texts import SHORT_REPLIES

THINK_S = 0.3  # the scripted pause before each reply is sent
REPO = Path(__file__).resolve().parent.parent


def run(scene: Scene) -> None:
    session = scene.start()
    status = session.control.call("status")
    pids = [status["supervisor"]["pid"]] + [a["pid"] for a in status["actors"].values()]
    recording = str(scene.dir / "video.mp4")
    # The declared recording is written in parts, one per player process, joined at the end.
    declared = [recording, str(part_path(recording, 0))]
    # Where a hot path could write: the system's own TMPDIR (private to this scene), the repo,
    # ~/.cache (where onnxruntime's telemetry was found writing). Not the machine's /tmp or
    # /dev/shm: other programs write there (shared memory is checked on our processes instead).
    watch = FileWatch([scene.tmp, REPO, Path.home() / ".cache"],
                      ignore=[*declared, scene.dir / "timeline.jsonl", scene.dir / "supervisor.log",
                              REPO / "out", REPO / ".venv", str(Path.home() / ".cache" / "pip")])
    open_for_writing, replies = [], []
    for reply in SHORT_REPLIES[: 4 if scene.quick else len(SHORT_REPLIES)]:
        start = len(scene.events)
        done = session.say_and_wait(reply, rate=40)
        open_for_writing += written_files(pids, allowed=declared) + shared_memory_in_use(pids)
        replies.append((start, done))
        time.sleep(THINK_S)
    changed = watch.changed()
    open_for_writing += written_files(pids, allowed=declared)
    scene.check("no file written outside the declared recording", not changed, changed[:5] or "none", "no new or modified file")
    scene.check("no actor holds a file open for writing", not open_for_writing, sorted(set(open_for_writing))[:5] or "none",
                "only the recording (and no shared memory)")

    # First audio = the first clause's tokens arriving + the engine synthesising it + our
    # pipeline (stitch, render, present). The engine's part is the machine's speed (Piper here:
    # RTF 0.15..0.22 idle, about twice that with both cores busy); the rest is what this system
    # adds and what it is judged on. The whole figure is checked against a sanity bound only;
    # the idle-machine figures are the benchmark's (README, "personas bench").
    latencies, engine_ms, silences = [], [], []
    previous_end = None
    for start, done in replies:
        mine = [e for e in scene.events[start:] if e["utterance_id"] == done["utterance_id"] and e["epoch"] >= done["epoch"]]
        first_token = min(e["data"].get("opened_at_ns") or e["ts_ns"] for e in mine
                          if e["actor"] == "parser" and e["stage"] == "parse")
        speech = [e["ts_ns"] for e in mine if e["actor"] == "player" and e["stage"] == "present"
                  and e["data"].get("kind") == "speech"]
        first_synth = min((e for e in mine if e["actor"] == "tts" and e["stage"] == "synth" and e["result"] == "ok"
                           and e["data"].get("audio_ms", 0) > 0), key=lambda e: e["chunk_id"], default=None)
        latencies.append(round((speech[0] - first_token) / 1e6, 1))
        engine_ms.append(round(first_synth["duration_ms"], 1) if first_synth else 0.0)  # (none: all of it is ours)
        if previous_end is not None:
            silences.append(round((speech[0] - previous_end) / 1e6 - THINK_S * 1000, 1))
        previous_end = speech[-1]
    ours = [round(total - engine, 1) for total, engine in zip(latencies, engine_ms)]
    scene.notes.update({"first_audio_ms": latencies, "first_chunk_synthesis_ms": engine_ms,
                        "first_audio_without_synthesis_ms": ours, "silence_beyond_think_ms": silences})
    scene.check("first audio within the breath", max(ours) < 350,
                f"max {max(ours)} ms beyond the first clause's synthesis (first audio {min(latencies)}..{max(latencies)} ms, "
                f"synthesis {min(engine_ms)}..{max(engine_ms)} ms)",
                "< 350 ms from first token, the engine's synthesis of the first clause aside")
    scene.check("first audio, all of it, within a sanity bound", max(latencies) < 1500, f"max {max(latencies)} ms",
                "< 1500 ms from first token on any machine state (idle target: 600 ms, see the benchmark)")
    scene.check("no underflow", not scene.of("player", "present", "underflow"), len(scene.of("player", "present", "underflow")), "0")
