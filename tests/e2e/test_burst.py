"""Acceptance: a token burst (10,000 tokens/s) keeps every process's memory bounded and loses
nothing; a burst of a whole script ends with every word spoken, in order.

The literal 10 s x 10k tokens/s burst is ~350k characters, hours of speech: the first test
runs it for real and checks memory, backpressure and an exact in-order prefix; the second
bursts a short script at the same rate and checks every word arrives in the recording."""

from __future__ import annotations

import threading
import time

import psutil
import pytest

from clients.feeder import Feeder
from protocol import tokenize_like_llm
from clients.session import Session
from clients.ports import write_private_config
from tests.media import read_mp4, transcribe, word_error_rate

pytestmark = pytest.mark.e2e
NUMBERS = "zero one two three four five six seven eight nine".split()


def numbered_text(sentences: int) -> str:
    """Unique, ordered sentences: 'Line three seven four is here.' ..."""
    return " ".join(f"Line {' '.join(NUMBERS[int(d)] for d in str(i))} is here." for i in range(sentences))


def test_ten_seconds_at_ten_thousand_tokens_per_second_stays_bounded_and_in_order(tmp_path):
    config = write_private_config(tmp_path / "c.toml")
    text = numbered_text(12_000)
    tokens = tokenize_like_llm(text, seed=3)[:100_000]
    with Session(str(config), log=tmp_path / "s.log", timeline_jsonl=tmp_path / "t.jsonl") as session:
        status = session.control.call("status")
        procs = [psutil.Process(status["supervisor"]["pid"])] + [psutil.Process(a["pid"]) for a in status["actors"].values()]
        baseline = [p.memory_info().rss for p in procs]
        sent = [0]
        feeder = Feeder(session.endpoints["ingress"])

        def burst():
            start = time.monotonic()
            for i, token in enumerate(tokens):
                delay = start + i / 10_000 - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                feeder.token(token)
                sent[0] = i + 1

        thread = threading.Thread(target=burst, daemon=True)
        thread.start()
        samples = []
        for _ in range(25):
            time.sleep(1.0)
            samples.append([p.memory_info().rss for p in procs])
        parsed_queue = session.control.call("status")["actors"]["parser"]["stats"]["queued_chunks"]
        session.barge_in("end of burst test")  # stop speaking the remaining hours
        events = list(session.timeline.events)
        feeder.sock.setsockopt(__import__("zmq").LINGER, 0)
    growth_mb = [(max(s[i] for s in samples) - baseline[i]) / 2**20 for i in range(len(procs))]
    late_growth_mb = [(samples[-1][i] - samples[9][i]) / 2**20 for i in range(len(procs))]
    print(f"\nsent {sent[0]} tokens in 25 s; RSS growth per process (MB): {[round(g, 1) for g in growth_mb]}; "
          f"over the last 15 s: {[round(g, 1) for g in late_growth_mb]}")
    assert max(growth_mb) < 120
    assert max(late_growth_mb) < 25  # flat: nothing accumulates while the burst keeps pushing
    assert parsed_queue <= 16
    chunks = sorted((e for e in events if e["actor"] == "parser" and e["stage"] == "parse" and e["result"] == "ok"
                     and e["epoch"] == 0), key=lambda e: e["chunk_id"])
    parsed_words = "".join(e["data"]["text"] for e in chunks).split()
    assert len(parsed_words) > 100
    assert parsed_words == text.split()[: len(parsed_words)]  # an exact prefix: nothing lost, nothing reordered
    spoken = [e["chunk_id"] for e in events if e["actor"] == "tts" and e["stage"] == "synth" and e["result"] == "ok"
              and e["epoch"] == 0]
    assert spoken == sorted(spoken) and spoken == list(range(spoken[0], spoken[0] + len(spoken)))
    assert not [e for e in events if e["result"] == "error" and e["stage"] in ("ingress", "receive", "send")]


BURST_SCRIPT = ("Good morning everyone. Today we will talk about the weather and the garden. "
                "The roses are growing fast because of the warm rain. Please remember to water the small plants.")


def test_a_burst_at_ten_thousand_tokens_per_second_is_spoken_completely_in_order(tmp_path, artifacts):
    config = write_private_config(tmp_path / "c.toml")
    recording = artifacts / "burst.mp4"
    with Session(str(config), record=str(recording), log=tmp_path / "s.log") as session:
        start = len(session.timeline.events)
        session.feeder.feed(tokenize_like_llm(BURST_SCRIPT, seed=5), rate=10_000)
        turn = session.wait_turn_end(after=start)
        session.wait_presented(turn["utterance_id"], 90, epoch=turn["epoch"])
        events = session.timeline.events
    chunks = sorted((e for e in events if e["actor"] == "parser" and e["stage"] == "parse" and e["result"] == "ok"),
                    key=lambda e: e["chunk_id"])
    assert "".join(e["data"]["text"] for e in chunks).split() == BURST_SCRIPT.split()
    frames, audio, sr, fps, _ = read_mp4(recording)
    heard = transcribe(audio, sr)
    wer = word_error_rate(BURST_SCRIPT, heard)
    print(f"\nheard: {heard}\nWER {wer:.3f}")
    assert wer <= 0.2
