"""Personas as a Pipecat service, in a real Pipecat pipeline (PipelineTask + PipelineRunner,
offline): a scripted LLM processor streams replies word by word as LLMTextFrames between
LLMFullResponseStart/EndFrame, PersonasAvatarService (which starts its own system) speaks them,
and a sink collects what it pushes. What comes out is real speech, each presented frame's
picture followed by its own sound; an InterruptionFrame mid-sentence is a barge-in on the
Personas timeline, and nothing of the interrupted epoch comes out after it."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pipecat", reason="Pipecat is not installed (the `pipecat` extra: "
                                      "pip install 'personas[pipecat]')")

from pipecat.frames.frames import (EndFrame, InterruptionFrame, LLMFullResponseEndFrame,  # noqa: E402
                                   LLMFullResponseStartFrame, LLMTextFrame, OutputAudioRawFrame,
                                   OutputImageRawFrame, StartFrame, TTSAudioRawFrame, TTSStartedFrame,
                                   TTSStoppedFrame)
from pipecat.pipeline.pipeline import Pipeline  # noqa: E402
from pipecat.pipeline.runner import PipelineRunner  # noqa: E402
from pipecat.pipeline.task import PipelineParams, PipelineTask  # noqa: E402
from pipecat.processors.frame_processor import FrameProcessor  # noqa: E402

from actors.dsp import BARGE_FADE_MS  # noqa: E402
from clients.asr import transcribe, words  # noqa: E402
from clients.pipecat_service import PersonasAvatarService  # noqa: E402
from clients.ports import write_private_config  # noqa: E402
from clients.timeline import TimelineRecorder  # noqa: E402
from protocol import frame_samples  # noqa: E402
from protocol.config import load_config  # noqa: E402

pytestmark = pytest.mark.e2e

FIRST = "Hello there. <v:expression:smile> I like to walk in the garden with my dog every morning."
LONG = ("Let me tell you a long story about the lighthouse keeper who lived on a small island, far away from "
        "the busy harbour town. Every evening he climbed the narrow stairs and lit the great lamp.")
LAST = "And now I can finish a whole sentence about the garden without being interrupted."
#: Sanity bounds only (the product bound, 20 ms at the player, is the benchmark's).
CUT_BOUND_MS = 100


class ScriptedLLM(FrameProcessor):
    """Stands in for an LLM service: a reply is LLMFullResponseStartFrame, the words as
    LLMTextFrames (leading space attached, as LLMs stream them), LLMFullResponseEndFrame; an
    interruption stops the reply being written, as it stops an LLM."""

    def __init__(self, words_per_s: float = 25.0):
        super().__init__()
        self.words_per_s = words_per_s
        self._writing: asyncio.Task | None = None

    def reply(self, text: str) -> None:
        self._writing = self.create_task(self._write(text), "scripted-reply")

    async def _write(self, text: str) -> None:
        await self.push_frame(LLMFullResponseStartFrame())
        for i, word in enumerate(text.split(" ")):
            await self.push_frame(LLMTextFrame(word if i == 0 else " " + word))
            await asyncio.sleep(1 / self.words_per_s)
        await self.push_frame(LLMFullResponseEndFrame())

    async def process_frame(self, frame, direction):
        await super().process_frame(frame, direction)
        if isinstance(frame, InterruptionFrame) and self._writing is not None:
            await self.cancel_task(self._writing)
            self._writing = None
        await self.push_frame(frame, direction)

    async def cleanup(self):
        await super().cleanup()
        if self._writing is not None:
            await self.cancel_task(self._writing)


class Sink(FrameProcessor):
    """Collects what the service pushes, in the order and at the moment it pushes it (direct
    mode: no queue of its own in between). Pictures are checked and kept as their shape only."""

    def __init__(self):
        super().__init__(enable_direct_mode=True)
        self.records: list[dict] = []
        self.started = False

    async def process_frame(self, frame, direction):
        await super().process_frame(frame, direction)
        now, i = time.monotonic_ns(), len(self.records)
        if isinstance(frame, StartFrame):
            self.started = True
        elif isinstance(frame, OutputImageRawFrame):
            self.records.append({"i": i, "t": now, "what": "image", "size": frame.size, "format": frame.format,
                                 "bytes": len(frame.image), "sync": frame.sync_with_audio,
                                 **frame.metadata["personas"]})
        elif isinstance(frame, OutputAudioRawFrame):
            self.records.append({"i": i, "t": now, "what": "audio", "tts": isinstance(frame, TTSAudioRawFrame),
                                 "pcm": frame.audio, "sr": frame.sample_rate, "channels": frame.num_channels,
                                 "samples": frame.num_frames, **frame.metadata["personas"]})
        elif isinstance(frame, (InterruptionFrame, TTSStartedFrame, TTSStoppedFrame)):
            self.records.append({"i": i, "t": now, "what": type(frame).__name__})
        await self.push_frame(frame, direction)

    def speech(self, start: int = 0, epoch: int | None = None) -> list[dict]:
        return [r for r in self.records[start:] if r["what"] == "audio" and r["kind"] == "speech"
                and (epoch is None or r["epoch"] == epoch)]


async def until(predicate, timeout: float, what: str, running: asyncio.Task) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if running.done():
            raise AssertionError(f"the pipeline ended before: {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        await asyncio.sleep(0.02)


def final_speech(sink: Sink, start: int, epoch_at_least: int = -1) -> dict | None:
    return next((r for r in sink.speech(start) if r["final"] and r["epoch"] >= epoch_at_least), None)


async def converse(service: PersonasAvatarService, llm: ScriptedLLM, sink: Sink, fps: int) -> dict:
    """Three replies through the pipeline: one whole, one interrupted mid-sentence, one after."""
    task = PipelineTask(Pipeline([llm, service, sink]), check_dangling_tasks=False, enable_rtvi=False,
                        params=PipelineParams(audio_out_sample_rate=22050))
    runner = PipelineRunner(handle_sigint=False, check_dangling_tasks=False)
    await runner.add_workers(task)
    running = asyncio.create_task(runner.run())
    marks: dict = {}
    try:
        await until(lambda: sink.started, 30, "the pipeline started", running)
        marks["first"] = len(sink.records)
        llm.reply(FIRST)  # its text waits for the system the service is starting
        await until(lambda: final_speech(sink, marks["first"]), 200, "the first reply was presented to its end",
                    running)
        marks["long"] = len(sink.records)
        llm.reply(LONG)
        await until(lambda: len(sink.speech(marks["long"])) >= int(1.2 * fps), 60, "1.2 s of the long reply came out",
                    running)
        marks["interrupted_epoch"] = sink.speech(marks["long"])[-1]["epoch"]
        marks["interrupt_ns"] = time.monotonic_ns()
        await task.queue_frame(InterruptionFrame())
        await until(lambda: service.barge_ins, 10, "the service barged in", running)
        await asyncio.sleep(1.0)  # anything of the old epoch still in flight would come out now
        marks["last"] = len(sink.records)
        llm.reply(LAST)
        await until(lambda: final_speech(sink, marks["last"], marks["interrupted_epoch"] + 1), 60,
                    "the reply after the interruption was presented to its end", running)
        await task.queue_frame(EndFrame())
        await asyncio.wait_for(running, 90)
    finally:
        if not running.done():
            await task.cancel()
            await asyncio.wait_for(running, 90)
    return marks


@pytest.fixture
def quiet_pipecat():
    """Pipecat logs every frame at DEBUG: keep its warnings, and put loguru back afterwards."""
    from loguru import logger

    logger.remove()
    handler = logger.add(sys.stderr, level="WARNING")
    yield
    logger.remove(handler)
    logger.add(sys.stderr)


def audio_end_ns(present: dict, sr: int, fps: int) -> float:
    """When the last audible sample of a presented tick played (the fade's end in a cut tick)."""
    data = present["data"]
    cut = data.get("cut_at", -1) >= 0
    played = data["cut_at"] + BARGE_FADE_MS * sr // 1000 if cut else frame_samples(data["tick"], sr, fps)
    return data["due_ns"] + played * 1e9 / sr


def heard(records: list[dict], sr: int, wav: Path) -> list[str]:
    import wave

    audio = np.frombuffer(b"".join(r["pcm"] for r in records), np.int16)
    with wave.open(str(wav), "wb") as out:  # for a person, when the words are not the ones expected
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sr)
        out.writeframes(audio.tobytes())
    return words(transcribe(audio, sr))


def assert_as_presented(speech: list[dict], records: list[dict], events: list[dict]) -> None:
    """From an utterance's first speech frame to its last, every frame the player presented came out
    as one picture, in order (the fill frames a sentence boundary may insert included)."""
    lo, hi = speech[0]["frame_index"], speech[-1]["frame_index"]
    shown = [r["frame_index"] for r in records[speech[0]["i"] - 1:speech[-1]["i"]] if r["what"] == "image"]
    presented = [e["frame"] for e in events if e["actor"] == "player" and e["stage"] == "present"
                 and e["epoch"] == speech[0]["epoch"] and lo <= e["frame"] <= hi]
    assert shown == presented


def test_a_pipecat_pipeline_speaks_through_personas_and_an_interruption_cuts_it(tmp_path, quiet_pipecat):
    config = write_private_config(tmp_path / "personas.toml")
    cfg = load_config(config)
    sr, fps = int(cfg["media"]["sample_rate"]), int(cfg["media"]["fps"])
    width, height = int(cfg["media"]["width"]), int(cfg["media"]["height"])
    threads = set(threading.enumerate())
    timeline = TimelineRecorder(cfg["endpoints"]["timeline"])  # the test's own view of the system
    service = PersonasAvatarService(config_path=str(config), log=tmp_path / "supervisor.log")
    llm, sink = ScriptedLLM(), Sink()
    try:
        marks = asyncio.run(converse(service, llm, sink, fps))
        assert service.session.proc.poll() is not None, "the service stops the system it started, in cleanup"
    finally:
        if service.session is not None:
            service.session.stop()  # stopping twice is stopping once; here for a failed run
        timeline.close()
    assert not [t.name for t in set(threading.enumerate()) - threads if t.is_alive()], "no thread left running"
    events = timeline.events
    records = sink.records

    # 1. The whole reply: real speech, each presented frame's picture and then its own sound.
    done = final_speech(sink, marks["first"])
    first = [r for r in sink.speech(marks["first"], epoch=done["epoch"]) if r["utterance_id"] == done["utterance_id"]]
    assert first[-1]["final"] and len(first) > 2 * fps
    said = first_heard = heard(first, sr, tmp_path / "first.wav")
    assert len({"walk", "garden", "dog", "morning"} & set(said)) >= 2, said
    assert_as_presented(first, records, events)
    for r in first:
        assert r["tts"] and r["sr"] == sr and r["channels"] == 1
        assert r["samples"] == frame_samples(r["frame_index"], sr, fps) == len(r["pcm"]) // 2
        image = records[r["i"] - 1]  # pushed just before its sound, with the same place on the clock
        assert image["what"] == "image" and (image["epoch"], image["frame_index"]) == (r["epoch"], r["frame_index"])
        assert image["size"] == (width, height) and image["format"] == "RGB" and image["bytes"] == width * height * 3
        assert image["sync"]
    assert np.mean([np.abs(np.frombuffer(r["pcm"], np.int16)).mean() for r in first]) > 300
    assert records[first[0]["i"] - 2]["what"] == "TTSStartedFrame"
    assert records[first[-1]["i"] + 1]["what"] == "TTSStoppedFrame"
    idle = [r for r in records if r.get("kind") == "fill"]
    assert idle and all(r["what"] == "image" for r in idle), "idle frames: the picture, not the silence"
    assert any(e["actor"] == "driver" and e["stage"] == "marker" and e["data"].get("value") == "smile"
               for e in events), "the <v:...> marker went through untouched and reached the face"

    # 2. The interruption: a barge-in on the timeline, nothing old pushed after it.
    old, t_int = marks["interrupted_epoch"], marks["interrupt_ns"]
    barge = service.barge_ins[-1]
    assert barge["via"] == "control" and barge["epoch"] == old + 1
    assert any(e["actor"] == "supervisor" and e["stage"] == "barge_in" and e["epoch"] == old + 1 and e["result"] == "ok"
               for e in events)
    assert any(e["actor"] == "player" and e["stage"] == "flush" and e["epoch"] == old + 1 for e in events)
    cut_at = next(i for i, r in enumerate(records) if r["what"] == "InterruptionFrame")
    old_speech = sink.speech(marks["long"], epoch=old)
    assert old_speech and not any(r["final"] for r in old_speech), "the interrupted reply was not spoken to its end"
    assert not [r for r in records[cut_at:] if r["what"] in ("audio", "image") and r["epoch"] <= old]
    last_audio_ms = (old_speech[-1]["t"] - t_int) / 1e6  # a figure: the assertion above is the guarantee
    presents = [e for e in events if e["actor"] == "player" and e["stage"] == "present" and e["epoch"] == old
                and e["data"].get("rms", 0) > 0]
    player_cut_ms = (max(audio_end_ns(e, sr, fps) for e in presents) - t_int) / 1e6
    assert player_cut_ms < CUT_BOUND_MS

    # 3. The next reply is spoken in the new epoch.
    last = sink.speech(marks["last"])
    assert last and all(r["epoch"] > old for r in last)
    assert_as_presented(last, records, events)
    assert last[-1]["final"] and len(last) > 2 * fps  # (its words: the first reply's check is enough)
    assert np.mean([np.abs(np.frombuffer(r["pcm"], np.int16)).mean() for r in last]) > 300
    print(f"\nheard: {' '.join(first_heard)}; interruption -> last old speech audio out of the service: "
          f"{last_audio_ms:.1f} ms; -> last audible old sample at the player: {player_cut_ms:.1f} ms; control "
          f"barge-in reply {barge['reply_ms']} ms; frames pushed: {service.stats}")
