"""The repros of hostile input, each a regression test: a few bytes must never break an actor,
and valid text around them is still spoken."""

import msgpack
import pytest

from actors.stream_parser import ParsedChunk, ParseError, StreamParser
from protocol import ProtocolError, decode, parse_ingress
from protocol.envelope import brief, unpack_header
from protocol.ingress import IngressToken

MAX_CHARS = 400
TTS_CHUNK_LIMIT = 2000  # what the TTS refuses (protocol.limits): a chunk must never reach it


def deep_array(depth: int) -> bytes:
    """``depth`` nested one-element msgpack arrays, built by hand: msgpack's own packer
    refuses to nest that deep, an attacker's bytes do not ask it."""
    return b"\x91" * depth + b"\xc0"


@pytest.mark.parametrize("depth", [13, 200, 1000, 100_000])
def test_a_deeply_nested_type_is_a_protocol_error_with_a_short_message(depth):
    raw = b"\x81" + msgpack.packb("type") + deep_array(depth)
    with pytest.raises(ProtocolError) as caught:
        decode([raw])
    assert len(str(caught.value)) < 400  # formatting the error did not recurse or explode
    with pytest.raises(ProtocolError):
        unpack_header(raw)


def test_brief_is_bounded_for_anything_msgpack_can_give():
    nested = []
    for _ in range(5000):
        nested = [nested]
    assert len(brief(nested)) < 200 and len(brief("x" * 60_000)) < 200 and len(brief({b"k": nested})) < 200


@pytest.mark.parametrize("filler", ["?", "\n", ".", "<", "!?", " "])
def test_a_long_run_without_letters_never_makes_a_chunk_the_tts_refuses(filler):
    parser = StreamParser(max_chunk_chars=MAX_CHARS)
    events = []
    for _ in range(4):
        for token in [filler * 2100, " a."]:
            events += parser.feed(token)
    events += parser.end()
    spoken = [e for e in events if isinstance(e, ParsedChunk)]
    assert all(len(e.text) <= MAX_CHARS for e in spoken), max(len(e.text) for e in spoken)
    assert sum(e.text.count("a") for e in spoken) == 4  # the words after the garbage are still there
    if filler.strip():  # a run of spaces is just silence, not an error
        assert any(isinstance(e, ParseError) and e.code == "unspeakable" for e in events)


def test_a_nul_byte_and_other_control_characters_are_removed_at_the_door():
    item = parse_ingress([b"hel\x00lo \x1b[31mworld\x7f\n"])
    assert isinstance(item, IngressToken)
    assert item.text == "hello [31mworld\n" and item.removed == 3
    assert parse_ingress([msgpack.packb({"type": "token", "text": "a\x00b"})]).text == "ab"
