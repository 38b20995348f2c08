"""`personas chat`'s pure parts: what the timeline says was spoken of a reply, the bounded
history, turn numbers, and the shipped system prompt's markers (each one the parser and the
driver take as it is written)."""

from __future__ import annotations

import re
import time

import pytest

from actors.render.motion import EXPRESSIONS, marker_targets
from actors.stream_parser import ParsedMarker, ParseError, StreamParser
from clients.chat import (DEFAULT_SYSTEM_PROMPT, ChatError, SpeechTrack, check_reachable, load_system_prompt, next_turn,
                          trimmed_history)


def event(actor, stage, epoch=0, utterance_id=-1, chunk_id=-1, result="ok", ts_ns=0, **data):
    return {"actor": actor, "stage": stage, "epoch": epoch, "utterance_id": utterance_id, "chunk_id": chunk_id,
            "result": result, "ts_ns": ts_ns, "data": data}


def parse(chunk_id, text, utterance_id=3, epoch=0, opened_at_ns=100):
    return event("parser", "parse", epoch, utterance_id, chunk_id, text=text, opened_at_ns=opened_at_ns)


def present(chunk_id, ts_ns, rms=900, utterance_id=3, epoch=0, kind="speech"):
    return event("player", "present", epoch, utterance_id, chunk_id, ts_ns=ts_ns, kind=kind, rms=rms)


def test_a_reply_heard_to_its_end_is_finished_with_every_chunk_spoken():
    track = SpeechTrack(epoch=0, turn=7, since_ns=50)
    for e in [parse(4, "Hello there."), parse(5, " How are you?"), event("parser", "turn_end", 0, 3, turn=7),
              present(4, 1000), present(5, 1040), present(5, 1080, rms=0),
              event("player", "utterance_presented", 0, 3)]:
        track.add(e)
    assert track.finished and track.done and track.cut is None
    assert track.spoken() == "Hello there. How are you?"
    assert (track.first_frame_ns, track.last_audible_ns) == (1000, 1040)


def test_a_cut_reply_keeps_the_chunks_that_reached_the_screen_and_ignores_other_text():
    track = SpeechTrack(epoch=2, turn=9, since_ns=50)
    for e in [parse(1, "Someone else's old text.", utterance_id=2, epoch=2, opened_at_ns=10),  # before the request
              parse(3, "First sentence.", epoch=2), parse(4, " Second one,", epoch=2), parse(5, " never heard.", epoch=2),
              present(3, 2000, epoch=2), present(4, 2040, epoch=2), present(1, 2050, utterance_id=2, epoch=2)]:
        track.add(e)
    assert not track.finished
    track.add(event("supervisor", "epoch", 3, reason="web"))
    assert track.cut is not None and not track.finished  # the player has not moved on yet
    track.add(present(-1, 2100, rms=0, utterance_id=-1, epoch=3, kind="hold"))
    assert track.finished and not track.done
    assert track.spoken() == "First sentence. Second one,"


def test_nothing_presented_means_nothing_spoken():
    track = SpeechTrack(epoch=0, turn=1, since_ns=0)
    track.add(parse(0, "Not yet said."))
    track.add(event("supervisor", "epoch", 1))
    assert track.spoken() == ""


def test_the_history_keeps_the_system_prompt_and_the_latest_exchanges_within_bounds():
    messages = [{"role": "system", "content": "S"}]
    for i in range(30):
        messages += [{"role": "user", "content": f"q{i}" * 10}, {"role": "assistant", "content": f"a{i}" * 10}]
    kept = trimmed_history(messages, max_messages=6, max_chars=10_000)
    assert kept[0]["content"] == "S" and len(kept) == 7 and kept[1]["role"] == "user"
    assert kept[-1]["content"] == "a29" * 10
    by_chars = trimmed_history(messages, max_messages=100, max_chars=95)
    assert sum(len(m["content"]) for m in by_chars[1:]) <= 95 and by_chars[1]["role"] == "user"
    assert trimmed_history([{"role": "user", "content": "x" * 50}], max_chars=10) == []


def test_turn_numbers_increase_and_start_above_earlier_senders():
    first = next_turn(0)
    assert first >= time.time_ns() // 1_000_000 - 1000
    assert next_turn(first) > first and next_turn(10**13) == 10**13 + 1


def test_the_shipped_system_prompt_teaches_markers_the_parser_and_driver_take():
    prompt = load_system_prompt(None)
    assert prompt == DEFAULT_SYSTEM_PROMPT.read_text(encoding="utf-8").strip()
    tags = re.findall(r"<v:[^>]*>", prompt)
    assert len(tags) >= 6
    for tag in tags:
        parser = StreamParser()
        out = parser.feed(f"Hello {tag}there.") + parser.end()
        markers = [e for e in out if isinstance(e, ParsedMarker)]
        assert len(markers) == 1 and not [e for e in out if isinstance(e, ParseError)], tag
        marker_targets(markers[0].command, markers[0].value)  # the driver knows it (raises if not)
    listed = re.search(r"an expression: ([a-z ,]+)", prompt).group(1).replace(" or ", ", ").split(", ")
    assert listed and set(listed) <= set(EXPRESSIONS)


def test_a_missing_system_prompt_or_a_bad_url_is_a_clear_error(tmp_path):
    with pytest.raises(ChatError, match="cannot read the system prompt"):
        load_system_prompt(tmp_path / "nope.md")
    with pytest.raises(ChatError, match="must be an http"):
        check_reachable("ftp://example.org/v1")
