"""Each actor class driven in-process through actors.testing.RecordingContext: the real
handlers and the real message path (ActorContext.deliver), no child process, no peer."""

from __future__ import annotations

import time

import msgpack
import numpy as np
import pytest

from actors.dsp import BARGE_FADE_MS, barge_cut, block_start, blocks_per_frame, fade_out
from actors.driver import Driver
from actors.engine_pool import ERROR_RETRY_S
from actors.parser import Parser
from actors.player import Player
from actors.stitcher import Stitcher
from actors.testing import RecordingContext
from actors.tts import Tts
from clients.ports import write_private_config
from protocol import (AudioChunk, AudioSpan, AVPacket, BargeIn, ChunkStart, ConfigUpdate, Credit, EpochAck,
                      EpochRequest, Provenance, TextChunk, VisualMarker, frame_start_sample)
from protocol.config import load_config

SR, FPS = 22050, 25
SPF = SR // FPS


@pytest.fixture
def config(tmp_path) -> dict:
    # 256x256 frames: the player tests build their own packets of that size.
    return load_config(write_private_config(tmp_path / "c.toml", {"player": {"overlay_text": ""},
                                                                  "media": {"width": 256, "height": 256}}))


def context(name: str, config: dict, epoch: int = 0) -> RecordingContext:
    return RecordingContext(name, config, epoch=epoch)


def tone(seconds: float, freq: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    ramp = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.02)
    return (8000 * ramp * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def audio_chunk(seq: int, pcm: np.ndarray, final: bool = False, epoch: int = 0) -> AudioChunk:
    return AudioChunk(epoch=epoch, utterance_id=0, sequence_id=seq, piece=0, last_piece=True, final=final,
                      sample_rate=SR, n_samples=len(pcm), phonemes=(("a", 0, len(pcm)),), word_anchors=((0, 0),),
                      adapter="test", pcm=pcm.tobytes())


# -- stitcher -----------------------------------------------------------------------------------
def test_stitcher_pins_chunks_to_frames_pays_credit_as_audio_leaves_and_drops_stale_audio(config):
    with context("stitcher", config) as ctx:
        stitcher = Stitcher(ctx)
        ctx.deliver(stitcher, Credit(link="stitcher->driver", epoch=0, amount=200, unit="frames", depth=100, playing=True))
        ctx.deliver(stitcher, audio_chunk(0, tone(0.5)))
        ctx.deliver(stitcher, audio_chunk(1, np.zeros(0, np.int16), final=True))
        stitcher.step()
        spans = ctx.of_type("driver", AudioSpan)
        assert [s.kind for s in spans] == ["speech"] and spans[0].final
        assert spans[0].n_frames == -(-int(0.5 * SR) // SPF)  # the last partial frame is padded
        start = spans[0].chunk_starts[0]
        assert isinstance(start, ChunkStart) and start.start_sample == 0 and start.provenance.adapter == "test"
        paid = sum(c.amount for c in ctx.of_type("tts", Credit) if c.amount and c.amount < stitcher.window_ms)
        assert paid == 500  # every ms of audio that left is returned, nothing more
        ctx.deliver(stitcher, audio_chunk(2, tone(0.2), epoch=0))
        ctx.on_system(stitcher, BargeIn(epoch=1, reason="test"))
        assert stitcher.buffer.size == 0 and isinstance(ctx.requests[-1], EpochAck) and ctx.requests[-1].epoch == 1
        assert ctx.of_type("tts", Credit)[-1].amount == stitcher.window_ms and ctx.of_type("tts", Credit)[-1].epoch == 1
        ctx.deliver(stitcher, audio_chunk(3, tone(0.2), epoch=0))  # in flight before the barge-in
        assert ctx.events_of("stale", "drop")[-1]["chunk_id"] == 3 and stitcher.buffer.size == 0


def test_stitcher_keeps_the_timeline_running_with_fill_and_reports_a_gap_mid_utterance(config):
    with context("stitcher", config) as ctx:
        stitcher = Stitcher(ctx)
        ctx.deliver(stitcher, Credit(link="stitcher->driver", epoch=0, amount=50, unit="frames", depth=0, playing=False))
        for _ in range(20):
            stitcher.step()
        fills = ctx.of_type("driver", AudioSpan)
        lead = max(stitcher.idle_lead, stitcher.jitter_min)  # before playback the lead covers the jitter buffer
        assert [s.kind for s in fills] == ["fill"] * lead
        assert [s.first_frame for s in fills] == list(range(lead))  # the clock never skips a slot
        ctx.deliver(stitcher, audio_chunk(0, tone(0.3)))  # an utterance starts, then the TTS falls behind
        stitcher.step()
        speech = [s for s in ctx.of_type("driver", AudioSpan) if s.kind == "speech"]
        assert sum(s.n_frames for s in speech) == int(0.3 * SR - stitcher.overlap) // SPF  # the tail waits for a join
        assert not ctx.events_of("stitch", "gap")
        # The player drains what was sent (depth 0) and no next chunk has come: the held tail plays out as a gap.
        ctx.deliver(stitcher, Credit(link="stitcher->driver", epoch=0, amount=0, unit="frames", depth=0, playing=True))
        stitcher.step()
        gap = ctx.events_of("stitch", "gap")
        assert len(gap) == 1 and gap[0]["data"]["held_samples"] > 0 and stitcher.gaps == 1
        assert ctx.of_type("driver", AudioSpan)[-1].kind == "speech"


# -- player -------------------------------------------------------------------------------------
def packet(frame: int, kind: str = "speech", epoch: int = 0, final: bool = False, level: int = 6000) -> AVPacket:
    pcm = np.full(frame_start_sample(frame + 1, SR, FPS) - frame_start_sample(frame, SR, FPS), level, np.int16)
    pixels = np.full((256, 256, 3), frame % 250, np.uint8)
    return AVPacket(epoch=epoch, frame_index=frame, sample_rate=SR, fps=FPS, width=256, height=256, kind=kind,
                    utterance_id=0, sequence_id=0 if kind == "speech" else -1, final=final,
                    provenance=Provenance("test", 0) if kind == "speech" else None,
                    pixels=pixels.tobytes(), pcm=pcm.tobytes())


def test_player_starts_when_the_jitter_buffer_is_full_and_returns_a_credit_per_frame(config):
    with context("player", config) as ctx:
        player = Player(ctx)
        for k in range(player.jitter_min - 1):
            ctx.deliver(player, packet(k))
        player.step()
        assert not player.playing
        ctx.deliver(player, packet(player.jitter_min - 1))
        player.step()
        assert player.playing and player.on_air.packet.frame_index == 0
        assert not ctx.events_of("present")  # on air: sealed (sinks, timeline) once its last block has started
        for tick in range(1, player.jitter_min):
            player.present(time.monotonic(), time.monotonic())  # seals the tick before
            player.tick += 1
        time.sleep(max(0.0, player.on_air.last_block_due - time.monotonic()) + 0.002)
        player.step()
        assert player.on_air is None
        frames = [e["frame"] for e in ctx.events_of("present")]
        assert frames == list(range(player.jitter_min))
        assert sum(c.amount for c in ctx.of_type("driver", Credit)) == player.jitter_min  # one per frame out
        provenance = ctx.events_of("present")[0]["data"]["provenance"]
        assert provenance == {"adapter": "test", "chunk_id": 0, "window_tokens": 0, "render_ms": 0.0, "epoch": 0,
                          "chunk_start": -1}


def test_player_cuts_a_barge_in_at_the_next_block_then_holds_and_an_empty_buffer_mid_speech_underflows(config):
    with context("player", config) as ctx:
        player = Player(ctx)
        for k in range(8):
            ctx.deliver(player, packet(k))
        player.step()  # tick 0 (frame 0) on air, its first block playing
        ctx.on_system(player, BargeIn(epoch=1, reason="test"))
        cut = ctx.events_of("present")[-1]  # the cut seals the tick at once
        blocks = blocks_per_frame(FPS)
        at = cut["data"]["cut_at"]
        assert cut["frame"] == 0 and cut["epoch"] == 0 and not cut["data"]["held"] and player.on_air is None
        assert at in [block_start(j, SPF, blocks) for j in range(1, blocks)]  # a block that had not started
        expected = barge_cut(np.full(SPF, 6000, np.int16), SR, at)
        assert np.all(expected[:at] == 6000) and not expected[at + BARGE_FADE_MS * SR // 1000:].any()
        assert np.sqrt(np.mean(expected.astype(float) ** 2)) == pytest.approx(cut["data"]["rms"], abs=1)
        flush = ctx.events_of("flush")[-1]["data"]
        assert flush == {"dropped_frames": 7, "fade_frame": False, "cut_tick": 0, "cut_at": at} and not player.buffer
        assert ctx.of_type("driver", Credit)[-1].amount == player.window
        ctx.deliver(player, packet(9, epoch=0))  # stale: never presented
        player.present(time.monotonic(), time.monotonic())
        player.tick += 1
        assert ctx.events_of("present")[-1]["result"] == "warn"  # an idle hold after the cut, not an underflow
        ctx.deliver(player, packet(20, epoch=1))
        player.present(time.monotonic(), time.monotonic())
        player.tick += 1
        player.present(time.monotonic(), time.monotonic())
        assert ctx.events_of("present")[-1]["result"] == "underflow"  # speech stopped without its final frame


def test_player_cuts_on_the_boundary_when_every_block_of_the_frame_has_started(config):
    with context("player", config) as ctx:
        player = Player(ctx)
        for k in range(8):
            ctx.deliver(player, packet(k))
        player.step()
        time.sleep(max(0.0, player.on_air.last_block_due - time.monotonic()) + 0.002)  # its last block plays
        ctx.on_system(player, BargeIn(epoch=1, reason="test"))
        whole = ctx.events_of("present")[-1]
        assert whole["frame"] == 0 and whole["data"]["cut_at"] == -1 and whole["data"]["rms"] == 6000
        assert len(player.buffer) == 1 and player.fade_next  # the next old frame carries the fade
        assert ctx.events_of("flush")[-1]["data"] == {"dropped_frames": 6, "fade_frame": True, "cut_tick": 1, "cut_at": 0}
        player.present(time.monotonic(), time.monotonic())
        cut = ctx.events_of("present")[-1]
        assert cut["frame"] == 1 and cut["data"]["faded"] and cut["data"]["held"] and cut["data"]["cut_at"] == 0
        expected = fade_out(np.full(SPF, 6000, np.int16), BARGE_FADE_MS * SR // 1000)
        assert np.sqrt(np.mean(expected.astype(float) ** 2)) == pytest.approx(cut["data"]["rms"], abs=1)
        assert np.array_equal(player.last_pixels, player.overlay.draw(np.full((256, 256, 3), 0, np.uint8)))  # frame 0 holds


def test_player_skips_queued_fill_when_speech_arrives(config):
    with context("player", config) as ctx:
        player = Player(ctx)
        for k in range(player.jitter_min + 3):
            ctx.deliver(player, packet(k, kind="fill"))
        player.step()
        ctx.deliver(player, packet(100))
        assert [p.kind for p in player.buffer] == ["speech"]
        assert ctx.events_of("skip_fill")[-1]["data"]["frames"] == player.jitter_min + 3 - 1


# -- parser -------------------------------------------------------------------------------------
def feed(ctx: RecordingContext, parser: Parser, *tokens: str) -> None:
    for token in tokens:
        parser.on_ingress([token.encode()])


def test_parser_sends_chunks_only_against_credit_and_markers_at_once(config):
    with context("parser", config) as ctx:
        parser = Parser(ctx)
        feed(ctx, parser, "One sentence here.", " <v:expression:smile>Two more words.", " Three is here.")
        parser.on_ingress([b'\x81\xa4type\xa3end'])
        parser.step()
        assert not ctx.of_type("tts", TextChunk)  # no credit yet
        assert [m.command for m in ctx.of_type("driver", VisualMarker)] == ["expression"]
        ctx.deliver(parser, Credit(link="parser->tts", epoch=0, amount=2, unit="chunks"))
        parser.step()
        sent = ctx.of_type("tts", TextChunk)
        assert len(sent) == 2 and sent[0].text.strip() == "One sentence here."
        ctx.deliver(parser, Credit(link="parser->tts", epoch=0, amount=5, unit="chunks"))
        parser.step()
        texts = [c.text.strip() for c in ctx.of_type("tts", TextChunk)]
        assert "Three is here." in texts and "smile" not in " ".join(texts)


def test_parser_reports_bad_ingress_and_keeps_going(config):
    with context("parser", config) as ctx:
        parser = Parser(ctx)
        parser.on_ingress([b"\xff\xfe not utf-8"])
        parser.on_ingress([b"a", b"b"])
        feed(ctx, parser, "Still here.")
        assert [e["data"]["code"] for e in ctx.events_of("ingress", "error")] == ["malformed", "malformed"]
        assert ctx.events_of("parse")[-1]["data"]["text"].strip() == "Still here."


def test_parser_barge_in_waits_for_its_epoch_then_sends_the_new_turn_in_it(config):
    with context("parser", config) as ctx:
        parser = Parser(ctx)
        ctx.deliver(parser, Credit(link="parser->tts", epoch=0, amount=4, unit="chunks"))
        feed(ctx, parser, "Old text.")
        parser.step()
        parser.on_ingress([b'\x81\xa4type\xa8barge_in'])
        assert isinstance(ctx.requests[-1], EpochRequest)
        feed(ctx, parser, "New turn.")
        parser.step()
        assert [c.text.strip() for c in ctx.of_type("tts", TextChunk)] == ["Old text."]  # held until the epoch
        ctx.on_system(parser, BargeIn(epoch=1, reason="parser: ingress barge_in"))
        ctx.deliver(parser, Credit(link="parser->tts", epoch=1, amount=4, unit="chunks"))
        parser.step()
        new = ctx.of_type("tts", TextChunk)[-1]
        assert new.text.strip() == "New turn." and new.epoch == 1


def turn_message(kind: str, turn: int, text: str | None = None) -> list[bytes]:
    return [msgpack.packb({"type": kind, "turn": turn, **({"text": text} if text is not None else {})})]


def test_parser_drops_tokens_of_an_interrupted_turn_still_in_flight_and_keeps_the_next_turn(config):
    """A burst of turn 3 queued before its barge-in (ingress, then control) is never spoken;
    turn 4, sent after, is; the drop is counted on the timeline."""
    with context("parser", config) as ctx:
        parser = Parser(ctx)
        ctx.deliver(parser, Credit(link="parser->tts", epoch=0, amount=4, unit="chunks"))
        parser.on_ingress(turn_message("token", 3, "First words of three."))
        parser.step()
        parser.on_ingress(turn_message("barge_in", 3))
        for word in ["Queued", " before", " the", " interrupt."] * 50:  # the burst in the socket buffers
            parser.on_ingress(turn_message("token", 3, word))
        parser.on_ingress(turn_message("end", 3))
        parser.on_ingress(turn_message("token", 4, "Turn four is spoken."))
        parser.on_ingress(turn_message("end", 4))
        ctx.on_system(parser, BargeIn(epoch=1, reason="parser: ingress barge_in"))
        ctx.deliver(parser, Credit(link="parser->tts", epoch=1, amount=4, unit="chunks"))
        time.sleep(0.3)  # past the report interval
        parser.step()
        spoken = [c.text.strip() for c in ctx.of_type("tts", TextChunk) if c.epoch == 1 and c.text.strip()]
        assert spoken == ["Turn four is spoken."]
        dropped = [e["data"] for e in ctx.events_of("ingress", "drop")]
        assert dropped and dropped[-1]["turn"] == 3 and dropped[-1]["tokens"] == 201  # 200 tokens and the end

        # Interrupted from the control endpoint: the broadcast names the turn; text of turn 5
        # that arrived before it is dropped, turn 6 that overtook it is kept.
        parser.on_ingress(turn_message("token", 5, "Five is interrupted."))
        parser.on_ingress(turn_message("token", 6, "Six overtook the broadcast."))
        ctx.on_system(parser, BargeIn(epoch=2, reason="control", issued_at_ns=time.monotonic_ns(), turn=5))
        parser.on_ingress(turn_message("token", 5, " Late five."))
        parser.on_ingress(turn_message("end", 6))
        ctx.deliver(parser, Credit(link="parser->tts", epoch=2, amount=4, unit="chunks"))
        parser.step()
        assert [c.text.strip() for c in ctx.of_type("tts", TextChunk) if c.epoch == 2 and c.text.strip()] == ["Six overtook the broadcast."]


def test_a_turn_named_by_a_control_barge_in_is_over_even_when_the_new_epoch_came_first(config):
    """The TTS's credit of the new epoch can reach the parser before the barge-in broadcast
    (both leave at once; the parser adopts the epoch from the credit). The broadcast that
    follows still ends the turn it names: what of it is queued, parsing or still arriving is
    dropped (before, turn 1 kept being parsed and spoken, and its sender stayed blocked)."""
    with context("parser", config) as ctx:
        parser = Parser(ctx)
        ctx.deliver(parser, Credit(link="parser->tts", epoch=0, amount=1, unit="chunks"))
        parser.on_ingress(turn_message("token", 1, "Spoken first."))
        parser.step()
        ctx.deliver(parser, Credit(link="parser->tts", epoch=1, amount=4, unit="chunks"))  # overtook
        parser.on_ingress(turn_message("token", 1, " Queued words of turn one."))
        parser.on_ingress(turn_message("token", 1, " And half a sentence"))
        barge = BargeIn(epoch=1, reason="control", issued_at_ns=time.monotonic_ns(), turn=1)
        ctx.on_system(parser, barge)
        ctx.on_system(parser, barge)  # re-broadcast until acknowledged: applied once
        parser.on_ingress(turn_message("token", 1, " still arriving."))
        parser.on_ingress(turn_message("end", 1))
        parser.on_ingress(turn_message("token", 2, "Turn two is spoken."))
        parser.on_ingress(turn_message("end", 2))
        parser.step()
        spoken = [c.text.strip() for c in ctx.of_type("tts", TextChunk) if c.epoch == 1 and c.text.strip()]
        assert spoken == ["Turn two is spoken."]
        assert ctx.events_of("retag")[-1]["data"]["late"] is True


def test_parser_refuses_a_bad_turn_and_ignores_a_stale_barge_in(config):
    with context("parser", config) as ctx:
        parser = Parser(ctx)
        parser.on_ingress([msgpack.packb({"type": "token", "text": "x", "turn": -5})])
        parser.on_ingress([msgpack.packb({"type": "token", "text": "x", "turn": "seven"})])
        assert [e["data"]["code"] for e in ctx.events_of("ingress", "error")] == ["malformed", "malformed"]
        parser.on_ingress(turn_message("token", 8, "Eight."))
        parser.on_ingress(turn_message("barge_in", 7))
        assert not any(isinstance(r, EpochRequest) for r in ctx.requests)
        assert ctx.events_of("ingress", "warn")[-1]["data"]["code"] == "stale_barge_in"


def test_parser_counts_what_it_will_not_speak_at_shutdown(config):
    with context("parser", config) as ctx:
        parser = Parser(ctx)
        feed(ctx, parser, "A sentence that never got credit.", " And half of")
        parser.report_unspoken()
        unspoken = ctx.events_of("left_unspoken", "drop")[-1]["data"]
        assert unspoken["chunks"] == 1 and unspoken["chars"] == len("A sentence that never got credit. And half of")
        assert ctx.beats[-1]["unspoken"] == unspoken


# -- driver -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def face_config(tmp_path_factory) -> dict:
    return load_config(write_private_config(tmp_path_factory.mktemp("driver") / "c.toml", {"driver": {"idle_motion": False}}))


def speech_span(first_frame: int, n_frames: int, sequence_id: int, epoch: int = 0) -> AudioSpan:
    start = frame_start_sample(first_frame, SR, FPS)
    n = frame_start_sample(first_frame + n_frames, SR, FPS) - start
    pcm = (8000 * np.sin(np.arange(n) / 5)).astype(np.int16)
    chunk = ChunkStart(sequence_id, start, ((0, start), (6, start + n // 2)), Provenance("test", sequence_id, epoch=epoch))
    return AudioSpan(epoch=epoch, first_frame=first_frame, n_frames=n_frames, sample_rate=SR, fps=FPS, kind="speech",
                     utterance_id=0, sequence_id=sequence_id, phonemes=(("a", start, n // 2), ("o", start + n // 2, n // 2)),
                     chunk_starts=(chunk,), provenance=chunk.provenance, pcm=pcm.tobytes())


def test_driver_renders_against_player_credit_first_frame_alone_and_stamps_provenance(face_config):
    with context("driver", face_config) as ctx:
        driver = Driver(ctx)
        ctx.deliver(driver, VisualMarker(epoch=0, utterance_id=0, sequence_id=7, command="expression", value="smile",
                                         timestamp_offset=6.0))
        assert driver.pending_markers  # waits for the chunk's placement
        ctx.deliver(driver, speech_span(0, 10, sequence_id=7))
        marker = ctx.events_of("marker")[-1]
        assert marker["result"] == "ok" and marker["frame"] == 5  # on the word's sample, not the chunk's start
        driver.step()
        assert not ctx.of_type("player", AVPacket)  # no player credit yet
        ctx.deliver(driver, Credit(link="driver->player", epoch=0, amount=6, unit="frames"))
        for _ in range(10):
            driver.step()
        packets = ctx.of_type("player", AVPacket)
        assert [p.frame_index for p in packets] == list(range(6))  # credit bounds what leaves
        assert [e["data"]["frames"] for e in ctx.events_of("render")][:2] == [1, 1]  # first frame alone, then the ramp
        assert packets[0].provenance.chunk_id == 7 and packets[0].provenance.frame_render_ms is not None
        assert len(packets[0].pixels) == packets[0].width * packets[0].height * 3
        returned = sum(c.amount for c in ctx.of_type("stitcher", Credit) if c.epoch == 0)
        assert returned == 6  # one frame of credit back to the stitcher per frame rendered (the window comes from run())


def test_driver_drops_a_stale_span_after_a_barge_in(face_config):
    with context("driver", face_config) as ctx:
        driver = Driver(ctx)
        ctx.deliver(driver, speech_span(0, 4, sequence_id=1))
        ctx.on_system(driver, BargeIn(epoch=1, reason="test"))
        assert driver.queued_frames() == 0
        ctx.deliver(driver, speech_span(4, 4, sequence_id=2, epoch=0))
        assert driver.queued_frames() == 0 and ctx.events_of("stale", "drop")


# -- tts ----------------------------------------------------------------------------------------
@pytest.fixture
def espeak_config(tmp_path) -> dict:
    return load_config(write_private_config(tmp_path / "c.toml", {"tts": {"adapters": ["espeak"], "adapter": "espeak",
                                                                           "fallback": ""}}))


def step_until(tts: Tts, condition, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tts.step()
        if condition():
            return True
        time.sleep(0.005)
    return False


def text_chunk(seq: int, text: str, final: bool = False, epoch: int = 0) -> TextChunk:
    return TextChunk(epoch=epoch, utterance_id=0, sequence_id=seq, text=text, boundary=".", final=final)


def test_tts_synthesises_in_order_and_sends_audio_only_against_stitcher_credit(espeak_config):
    with context("tts", espeak_config) as ctx:
        tts = Tts(ctx)
        try:
            ctx.deliver(tts, text_chunk(0, "Hello there."))
            ctx.deliver(tts, text_chunk(1, "How are you?", final=True))
            assert step_until(tts, lambda: len(tts.outgoing) == 2)
            assert not ctx.of_type("stitcher", AudioChunk)  # synthesised, but no credit yet
            ctx.deliver(tts, Credit(link="tts->stitcher", epoch=0, amount=60_000, unit="ms"))
            assert step_until(tts, lambda: not tts.outgoing)
            chunks = ctx.of_type("stitcher", AudioChunk)
            assert [c.sequence_id for c in chunks] == [0, 1] and chunks[-1].final
            assert chunks[0].phonemes and chunks[0].adapter == "espeak"
            spent = sum(e["data"]["cost"] for e in ctx.events_of("send"))
            assert spent <= 60_000 and spent == sum(-(-c.n_samples * 1000 // c.sample_rate) for c in chunks)
            assert sum(c.amount for c in ctx.of_type("parser", Credit)) == 2  # a chunk of credit back per chunk sent (the window comes from run())
        finally:
            tts.pool.close()


def test_tts_refuses_chunks_beyond_the_granted_window_and_a_failing_engine_is_reported(espeak_config):
    with context("tts", espeak_config) as ctx:
        tts = Tts(ctx)
        try:
            for seq in range(tts.window_chunks + 1):
                ctx.deliver(tts, text_chunk(seq, f"Sentence number {seq}."))
            assert ctx.events_of("receive", "error")[-1]["data"]["code"] == "credit_exceeded"
            assert len(tts.pending) == tts.window_chunks
            ctx.on_system(tts, ConfigUpdate(version=1, changes={"fault.adapter": "espeak", "fault.kind": "error"}))
            ctx.on_system(tts, BargeIn(epoch=1, reason="test"))
            assert not tts.pending
            ctx.deliver(tts, text_chunk(10, "This one fails.", epoch=1))
            assert step_until(tts, lambda: bool(ctx.of_type("stitcher", AudioChunk)))
            assert [e["data"]["code"] for e in ctx.events_of("synth", "error")][-2:] == ["engine_error", "unspoken"]
            sent = ctx.of_type("stitcher", AudioChunk)[-1]  # nothing to fall back to: silence, and the stream moves on
            assert sent.sequence_id == 10 and sent.n_samples == 0 and sent.epoch == 1
            assert ctx.events_of("synth", "ok")[-1]["data"]["samples"] == 0
        finally:
            tts.pool.close()


def test_a_failing_chunk_falls_back_for_that_chunk_only_and_the_primary_is_tried_again(tmp_path):
    config = load_config(write_private_config(tmp_path / "c.toml", {"tts": {"adapters": ["espeak", "piper"],
                                                                             "adapter": "espeak", "fallback": "piper"}}))
    with context("tts", config) as ctx:
        tts = Tts(ctx)
        try:
            ctx.deliver(tts, Credit(link="tts->stitcher", epoch=0, amount=60_000, unit="ms"))
            ctx.deliver(tts, text_chunk(0, "The first engine speaks this."))
            assert step_until(tts, lambda: len(ctx.of_type("stitcher", AudioChunk)) >= 1)
            ctx.on_system(tts, ConfigUpdate(version=1, changes={"fault.adapter": "espeak", "fault.kind": "error_once"}))
            ctx.deliver(tts, text_chunk(1, "This one fails on the first engine."))
            assert step_until(tts, lambda: len(ctx.of_type("stitcher", AudioChunk)) >= 2)
            time.sleep(ERROR_RETRY_S * 1.5)  # the failed engine's back-off
            ctx.deliver(tts, text_chunk(2, "This one is spoken by it again.", final=True))
            assert step_until(tts, lambda: len(ctx.of_type("stitcher", AudioChunk)) >= 3)
            assert [c.adapter for c in ctx.of_type("stitcher", AudioChunk)] == ["espeak", "piper", "espeak"]
            reasons = [e["data"]["reason"] for e in ctx.events_of("swap")]
            assert reasons == ["error", "recovered"]  # the reason is what happened, never "stall"
        finally:
            tts.pool.close()
