"""One real actor process at a time, driven on real sockets by tests/harness.py."""

from __future__ import annotations

import time

import numpy as np
import pytest

from actors.dsp import BARGE_FADE_MS
from protocol import AudioChunk, AudioSpan, AVPacket, BargeIn, Credit, frame_start_sample
from clients.capture import AVCollector
from clients.ports import write_private_config
from tests.process.harness import ActorHarness

SR, FPS = 22050, 25
SPF = SR // FPS


def tone(seconds: float, freq: float = 220.0, amp: float = 8000.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    ramp = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.02)  # fade edges like real TTS output
    return (amp * ramp * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def audio_chunk(seq: int, pcm: np.ndarray, final: bool = False, utterance: int = 0, epoch: int = 0) -> AudioChunk:
    return AudioChunk(epoch=epoch, utterance_id=utterance, sequence_id=seq, piece=0, last_piece=True, final=final,
                      sample_rate=SR, n_samples=len(pcm), phonemes=(("a", 0, len(pcm)),), word_anchors=((0, 0),),
                      adapter="test", pcm=pcm.tobytes())


def spans(h: ActorHarness) -> list[AudioSpan]:
    return [m for m in h.received["driver"] if isinstance(m, AudioSpan)]


@pytest.fixture
def stitcher(tmp_path):
    config = write_private_config(tmp_path / "c.toml")
    with ActorHarness("stitcher", config) as h:
        yield h


def test_stitcher_joins_chunks_without_gaps_or_clicks_and_pins_frames_to_samples(stitcher):
    # Keep the reported lead high so no idle fill is interleaved; plenty of frame credit.
    stitcher.send(Credit(link="stitcher->driver", epoch=0, amount=500, unit="frames", depth=100, playing=True))
    a, b = tone(1.0), tone(0.61, freq=330.0)
    stitcher.send(audio_chunk(0, a))
    stitcher.send(audio_chunk(1, b))
    stitcher.send(audio_chunk(2, np.zeros(0, np.int16), final=True))
    assert stitcher.pump_until(lambda: any(s.final for s in spans(stitcher)), 10)
    speech = [s for s in spans(stitcher) if s.kind == "speech"]
    first = speech[0].first_frame
    for prev, nxt in zip(speech, speech[1:]):
        assert nxt.first_frame == prev.first_frame + prev.n_frames  # contiguous frame slots
    pcm = np.concatenate([np.frombuffer(s.pcm, np.int16) for s in speech])
    assert len(pcm) == frame_start_sample(first + sum(s.n_frames for s in speech), SR, FPS) - frame_start_sample(first, SR, FPS)
    overlap = int(SR * 0.010)
    joined = len(a) + len(b) - overlap
    assert np.all(pcm[joined:] == 0) and np.any(pcm[joined - SPF:joined] != 0)  # exactly one overlap shorter, padded
    assert np.abs(np.diff(pcm[:joined].astype(np.int32))).max() < 1500  # no click anywhere, joins included
    starts = {s.sequence_id: s.start_sample for span in speech for s in span.chunk_starts}
    assert starts[0] == frame_start_sample(first, SR, FPS) and starts[1] == starts[0] + len(a) - overlap


def test_a_late_chunk_mid_utterance_leaves_a_pause_but_joins_as_it_would_on_time(tmp_path):
    """The first chunk runs out with the second still synthesising: gap frames (silence) go
    out, then the second chunk is crossfaded into the first one's held overlap tail exactly
    as without the wait -- the speech without its pauses is the same, sample for sample (the
    crash-recovery checks compare runs that way)."""
    a, b = tone(0.5), tone(0.4, freq=330.0)

    def said(late: bool) -> tuple[np.ndarray, int]:
        config = write_private_config(tmp_path / f"late{late}.toml")
        with ActorHarness("stitcher", config) as h:
            # A shallow player (depth 0): the stitcher must fill a late chunk's wait with gaps.
            h.send(Credit(link="stitcher->driver", epoch=0, amount=500, unit="frames", depth=0, playing=True))
            h.send(audio_chunk(0, a))
            deadline = time.monotonic() + 10
            while late and len(h.events_of("stitch", "gap")) < 3 and time.monotonic() < deadline:
                # The player plays everything at once: the reported depth stays 0.
                h.send(Credit(link="stitcher->driver", epoch=0, amount=0, unit="frames", depth=0, playing=True))
                h.pump(0.02)
            h.send(audio_chunk(1, b))
            h.send(audio_chunk(2, np.zeros(0, np.int16), final=True))
            assert h.pump_until(lambda: any(s.final for s in spans(h)), 10)
            pcm = np.concatenate([np.frombuffer(s.pcm, np.int16) for s in spans(h) if s.kind == "speech"])
            return spoken_pcm_of(pcm), len(h.events_of("stitch", "gap"))

    on_time, gaps_on_time = said(late=False)
    waited, gaps = said(late=True)
    assert gaps_on_time == 0 and gaps >= 3
    joined_away = np.count_nonzero(np.concatenate([a, b])) - len(on_time)
    assert abs(joined_away - int(SR * 0.010)) <= 10  # one 10 ms crossfade (a mixed sample may be 0)
    assert np.array_equal(waited, on_time)


def spoken_pcm_of(pcm: np.ndarray) -> np.ndarray:
    from clients.analysis import spoken_pcm

    return spoken_pcm([AVPacket(epoch=0, frame_index=0, sample_rate=SR, fps=FPS, width=1, height=1, kind="speech",
                                utterance_id=0, sequence_id=0, pixels=b"\0\0\0", pcm=pcm.tobytes())])


def test_stitcher_never_sends_more_frames_than_granted(stitcher):
    stitcher.send(Credit(link="stitcher->driver", epoch=0, amount=3, unit="frames", depth=100, playing=True))
    stitcher.send(audio_chunk(0, tone(1.0)))
    stitcher.pump(1.0)
    assert sum(s.n_frames for s in spans(stitcher)) == 3
    stitcher.send(Credit(link="stitcher->driver", epoch=0, amount=4, unit="frames", depth=100, playing=True))
    stitcher.pump(0.5)
    assert sum(s.n_frames for s in spans(stitcher)) == 7
    # Audio credit back to the TTS only for audio that actually left.
    granted = [m for m in stitcher.received["tts"] if isinstance(m, Credit)]
    assert granted[0].amount == 6000  # the initial window
    assert sum(c.amount for c in granted[1:]) == 0  # 7 frames out, the 1 s chunk still mostly held


def test_stitcher_keeps_an_idle_lead_of_fill_frames_and_drops_stale_epochs(stitcher):
    stitcher.send(Credit(link="stitcher->driver", epoch=0, amount=20, unit="frames", depth=0, playing=True))
    stitcher.pump(0.5)
    fill = [s for s in spans(stitcher) if s.kind == "fill"]
    assert sum(s.n_frames for s in fill) == 6  # idle_lead_frames, then it waits for the lead to drain
    assert all(np.all(np.frombuffer(s.pcm, np.int16) == 0) for s in fill)
    stitcher.broadcast(BargeIn(epoch=1, reason="test"))
    stitcher.pump(0.3)
    stitcher.send(audio_chunk(0, tone(0.5), epoch=0))  # from before the barge-in: dropped
    stitcher.pump(0.3)
    assert stitcher.events_of("stale", "drop") and not [s for s in spans(stitcher) if s.kind == "speech"]
    assert stitcher.events_of("barge_in")[0]["data"]["ack"] is True


def packet(k: int, epoch: int, kind: str = "speech", amp: int = 9000, utterance: int = 0) -> AVPacket:
    pcm = (amp * np.sin(np.arange(SPF) * 0.3)).astype(np.int16) if amp else np.zeros(SPF, np.int16)
    return AVPacket(epoch=epoch, frame_index=k, sample_rate=SR, fps=FPS, width=32, height=32, kind=kind,
                    utterance_id=utterance, sequence_id=0, pixels=bytes([k % 256]) * (32 * 32 * 3), pcm=pcm.tobytes())


def test_player_waits_for_the_jitter_buffer_then_cuts_a_barge_in_at_the_next_block(tmp_path):
    config = write_private_config(tmp_path / "c.toml", {"media": {"width": 32, "height": 32}, "player": {"overlay_text": ""}})
    with ActorHarness("player", config) as h:
        collector = AVCollector(h.endpoints["av_out"])
        assert collector.wait_connected(10)
        for k in range(4):
            h.send(packet(k, 0))
        h.pump(0.4)
        assert not h.events_of("playback_start")  # 4 < jitter_min_frames
        for k in range(4, 30):
            h.send(packet(k, 0))
        h.pump(0.3)
        assert h.events_of("playback_start")[0]["data"]["buffered"] >= 5
        h.broadcast(BargeIn(epoch=1, reason="test"))
        h.pump(0.2)
        for k in range(30, 40):
            h.send(packet(k, 1, utterance=1))
        h.pump(0.8)
        collector.close()
        presented = collector.packets
        old = [p for p in presented if p.epoch == 0]
        new = [p for p in presented if p.epoch == 1]
        assert new and old and len(old) < 30  # the rest of the old epoch was flushed
        # The cut: the tick on air when the barge-in came fades out from the first block that had not
        # started (on a frame boundary: the next old frame's first block, under the held picture).
        cuts = [e for e in h.events_of("present") if e["epoch"] == 0 and e["data"]["cut_at"] >= 0]
        assert len(cuts) == 1 and old[-1].frame_index == cuts[0]["frame"]
        at, fade = cuts[0]["data"]["cut_at"], BARGE_FADE_MS * SR // 1000
        cut = np.frombuffer(old[-1].pcm, np.int16)
        whole = np.frombuffer(packet(old[-1].frame_index, 0).pcm, np.int16)
        assert np.array_equal(cut[:at], whole[:at])  # the blocks already playing are untouched
        assert np.all(cut[at + fade:] == 0) and abs(int(cut[at + fade - 1])) < 200  # faded to silence within the fade
        if cuts[0]["data"]["held"]:  # a cut on the boundary shows no new old picture
            assert at == 0 and old[-1].pixels == old[-2].pixels
        assert presented.index(new[0]) == presented.index(old[-1]) + 1 or all(
            p.epoch == 0 or p.kind == "fill" for p in presented[presented.index(old[-1]) + 1:presented.index(new[0])])
        flush = h.events_of("flush")[0]["data"]
        assert flush["dropped_frames"] > 0 and flush["cut_at"] == at and flush["fade_frame"] is (at == 0)
