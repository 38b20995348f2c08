"""The envelope rejects everything it should, with a reason, and round-trips the rest."""

import msgpack
import pytest

import protocol as p
from protocol.envelope import ProtocolError, unpack_header
from protocol.limits import INGRESS_MAX_BYTES, MAX_HEADER_BYTES, MSGPACK_LIMITS


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


def _header(**fields) -> bytes:
    return msgpack.packb({"v": 1, "type": "heartbeat", "actor": "tts", "pid": 1, "seq": 0, **fields}, use_bin_type=True)


def _sized_header(total: int) -> bytes:
    """A valid msgpack header map of exactly ``total`` bytes (a long text field pads it)."""
    base = len(_header(stats={"pad": "x" * 300})) - 300  # str16 prefix: fixed overhead above 255 chars
    raw = _header(stats={"pad": "x" * (total - base)})
    assert len(raw) == total
    return raw


@pytest.mark.parametrize("limit, at_limit, over_limit", [
    # each case: valid msgpack whose content sits exactly at, then one past, one limit in MSGPACK_LIMITS
    ("max_array_len", lambda n: _header(stats={"xs": [0] * n}), lambda n: _header(stats={"xs": [0] * (n + 1)})),
    ("max_map_len", lambda n: _header(stats={f"k{i:04}": 0 for i in range(n)}),
     lambda n: _header(stats={f"k{i:04}": 0 for i in range(n + 1)})),
    ("max_ext_len", lambda n: _header(stats={"e": 0}), lambda n: _header(stats={"e": msgpack.ExtType(1, b"x")})),
], ids=["array", "map", "ext"])
def test_msgpack_limits_are_what_rejects_oversized_content(limit, at_limit, over_limit):
    n = MSGPACK_LIMITS[limit]
    ok, hostile = at_limit(n), over_limit(n)
    assert len(hostile) <= MAX_HEADER_BYTES  # not caught by the size check: only the unpack limit stands in the way
    assert unpack_header(ok)["stats"] is not None  # at the limit: accepted
    msgpack.unpackb(hostile, raw=False, strict_map_key=True)  # well-formed: plain msgpack (no limits) accepts it
    with pytest.raises(ProtocolError) as err:
        unpack_header(hostile)
    assert err.value.code == "malformed" and limit in err.value.detail  # rejected, and by this limit
    with pytest.raises(ProtocolError):
        p.decode([hostile])


def test_header_size_limit_is_what_rejects_a_long_header():
    ok, hostile = _sized_header(MAX_HEADER_BYTES), _sized_header(MAX_HEADER_BYTES + 1)
    assert unpack_header(ok)["type"] == "heartbeat"  # exactly the limit: accepted
    msgpack.unpackb(hostile, raw=False)  # well-formed: plain msgpack accepts it
    with pytest.raises(ProtocolError) as err:
        unpack_header(hostile)
    assert err.value.code == "oversized"
    # max_str_len / max_bin_len equal the header limit: no string can outgrow the header that holds it.
    assert MSGPACK_LIMITS["max_str_len"] <= MAX_HEADER_BYTES and MSGPACK_LIMITS["max_bin_len"] <= MAX_HEADER_BYTES


def test_msgpack_limits_refuse_huge_declared_lengths():
    # An array header claiming 2**31 elements must fail fast, not allocate: the declared length is
    # checked against max_array_len before any element is read.
    with pytest.raises(ProtocolError) as err:
        p.decode([b"\xdd\x7f\xff\xff\xff"])
    assert f"exceeds max_array_len({MSGPACK_LIMITS['max_array_len']})" in err.value.detail


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
