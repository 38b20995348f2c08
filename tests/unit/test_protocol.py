"""The envelope rejects everything it should, with a reason, and round-trips the rest."""

import msgpack
import pytest

import protocol as p
from protocol.envelope import ProtocolError
from protocol.limits import INGRESS_MAX_BYTES, MAX_HEADER_BYTES


def test_every_family_round_trips():
    messages = [
        p.TextChunk(epoch=2, utterance_id=1, sequence_id=7, text="Hello there.", boundary=".", final=False, marker_count=1),
        p.VisualMarker(epoch=2, utterance_id=1, sequence_id=7, command="expression", value="smile", timestamp_offset=3.0),
        p.AudioChunk(epoch=2, utterance_id=1, sequence_id=7, piece=0, last_piece=True, final=False, sample_rate=22050,
                     n_samples=3, phonemes=(("h", 0, 2), ("i", 2, 1)), word_anchors=((0, 0),), pcm=b"\x01\x00" * 3),
        p.AudioSpan(epoch=2, first_frame=10, n_frames=2, sample_rate=22050, fps=25, kind="speech", pcm=b"\x00\x00" * 1764),
        p.AVPacket(epoch=2, frame_index=10, sample_rate=22050, fps=25, width=4, height=2, kind="fill",
                   pixels=bytes(24), pcm=bytes(1764)),
        p.Credit(link="tts->stitcher", epoch=2, amount=500, unit="ms", depth=3, playing=True),
        p.BargeIn(epoch=3, reason="test"),
        p.Heartbeat(actor="tts", pid=1, seq=4, stats={"q": 1}),
        p.TimelineEvent(stage="synth", actor="tts", result="ok", ts_ns=5, data={"rtf": 0.1}),
    ]
    for msg in messages:
        back = p.decode(p.encode(msg))
        assert type(back) is type(msg)
        for name in msg.PAYLOADS:
            assert bytes(getattr(back, name)) == bytes(getattr(msg, name))
        assert back.TYPE == msg.TYPE


@pytest.mark.parametrize("frames, code", [
    ([b"\xc1garbage"], "malformed"),
    ([msgpack.packb([1, 2, 3])], "malformed"),
    ([msgpack.packb({"v": 99, "type": "credit"})], "version"),
    ([msgpack.packb({"v": 1, "type": "no_such_thing"})], "unknown_type"),
    ([msgpack.packb({"v": 1, "type": "credit", "link": "x", "epoch": "zero", "amount": 1, "unit": "ms"})], "malformed"),
    ([msgpack.packb({"v": 1, "type": "credit", "link": "x", "epoch": 0, "amount": 1, "unit": "parsecs"})], "malformed"),
    ([msgpack.packb({"v": 1, "type": "audio_chunk", "epoch": 0, "utterance_id": 0, "sequence_id": 0, "piece": 0,
                     "last_piece": True, "final": False, "sample_rate": 22050, "n_samples": 4}), b"\x00\x00"], "malformed"),
    ([b"\x80" * (MAX_HEADER_BYTES + 1)], "oversized"),
    ([], "malformed"),
])
def test_bad_frames_are_rejected_with_a_reason(frames, code):
    with pytest.raises(ProtocolError) as err:
        p.decode(frames)
    assert err.value.code == code


def test_msgpack_limits_refuse_huge_declared_lengths():
    # An array header claiming 2**31 elements must fail fast, not allocate.
    with pytest.raises(ProtocolError):
        p.decode([b"\xdd\x7f\xff\xff\xff"])


def test_ingress_accepts_text_and_control_maps():
    assert p.parse_ingress([b"Hello"]) == p.IngressToken("Hello")
    assert p.parse_ingress(["héllo ✓".encode()]) == p.IngressToken("héllo ✓")
    assert p.parse_ingress([msgpack.packb({"type": "token", "text": " there"})]) == p.IngressToken(" there")
    assert p.parse_ingress([msgpack.packb({"type": "end"})]) == p.IngressEnd()
    assert p.parse_ingress([msgpack.packb({"type": "barge_in"})]) == p.IngressBargeIn()
    # 0xDE 0x93 is valid UTF-8 text that merely looks like a msgpack map16 marker.
    assert p.parse_ingress(["ޓ".encode()]) == p.IngressToken("ޓ")


@pytest.mark.parametrize("frames, code", [
    ([b"\xff\xfe bad utf8"], "malformed"),
    ([b"x" * (INGRESS_MAX_BYTES + 1)], "oversized"),
    ([msgpack.packb({"type": "dance"})], "unknown_type"),
    ([msgpack.packb({"type": "token", "text": 5})], "malformed"),
    ([b"\x82\xc1\xc1"], "malformed"),
    ([b"a", b"b"], "malformed"),
])
def test_ingress_rejects_bad_input(frames, code):
    with pytest.raises(ProtocolError) as err:
        p.parse_ingress(frames)
    assert err.value.code == code
