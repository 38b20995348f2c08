"""`personas chat`: a conversation with any OpenAI-compatible LLM server (llama.cpp, Ollama,
vLLM, a hosted one), spoken by the avatar.

Each reply is a chat completion streamed with the official ``openai`` client
(``stream=True``); every piece of text goes to the ingress the moment it arrives, markers and
all, as one numbered turn (INTERFACES.md §3). A barge-in is the end of that stream: the client
shuts the HTTP connection down (the server sees it closed and stops generating), feeds
nothing more, and the avatar is cut by the Personas barge-in. A barge-in may come from this
client (``--barge-in-after``, Ctrl-C, a line typed while the avatar speaks) or from anywhere
else (the web page, another client): the client follows the timeline and treats any new epoch
as one.

History: a reply heard to its end goes into the conversation as the LLM wrote it; a reply cut
short goes in as what the avatar had begun to say: the text of every chunk of which at least
one speech frame was presented (the chunk on air at the cut counts whole; markers are gone
from it, the parser strips them).

Runtime code never imports this module (client layer)."""

from __future__ import annotations

import json
import os
import queue
import socket
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import zmq

from protocol.config import REPO_ROOT
from protocol.control_endpoint import ControlClient

from .feeder import Feeder
from .session import Session, SessionError
from .timeline import TimelineRecorder

#: The system prompt `personas chat` sends unless told otherwise: the marker vocabulary.
DEFAULT_SYSTEM_PROMPT = REPO_ROOT / "configs" / "chat_system_prompt.md"
#: Connecting to the LLM server (the preflight and every request).
CONNECT_TIMEOUT_S = 5.0
#: Default longest silence of the LLM server inside a reply (prompt processing included).
READ_TIMEOUT_S = 60.0
#: A system prompt file larger than this is refused (it is sent with every request).
MAX_SYSTEM_PROMPT_BYTES = 64 * 1024
#: Text of one reply beyond this is not fed: the stream is closed as if the reply had ended.
MAX_REPLY_CHARS = 20_000
#: Largest piece sent to the ingress in one message (an ingress message is at most 64 KiB).
INGRESS_PIECE_CHARS = 8_000
#: Conversation kept for the next request (older exchanges are dropped first).
MAX_HISTORY_MESSAGES = 40
MAX_HISTORY_CHARS = 24_000
#: How long the ingress may refuse a token (backpressure) before the reply is abandoned.
FEED_TIMEOUT_S = 10.0
#: After a barge-in: how long the player may take to present a frame of the new epoch.
CUT_TIMEOUT_S = 5.0
#: How long the avatar may take to finish a reply: this plus SPEAK_S_PER_CHAR per character.
SPEAK_TIMEOUT_S = 60.0
SPEAK_S_PER_CHAR = 0.15
#: How often the timeline follower looks at its stop flag.
FOLLOW_POLL_S = 0.1
#: Lines typed while a reply is under way, kept until read (interactive mode).
STDIN_QUEUE_LINES = 16


class ChatError(RuntimeError):
    """Why the conversation cannot go on, in one line a user can act on."""


@dataclass(frozen=True)
class LLMSettings:
    url: str  # base URL of the OpenAI-compatible API, e.g. http://127.0.0.1:8000/v1
    model: str
    api_key: str = ""
    max_tokens: int = 400
    temperature: float | None = None
    seed: int | None = None
    read_timeout_s: float = READ_TIMEOUT_S


@dataclass
class Reply:
    """One reply: what the LLM streamed, when, what was fed, and what the avatar made of it.
    Times are CLOCK_MONOTONIC ns, comparable with the timeline's ``ts_ns``."""

    turn: int
    user: str
    epoch: int = -1
    text: str = ""  # everything the LLM streamed (and was fed), markers and all
    pieces: list[tuple[int, str]] = field(default_factory=list)  # (fed at, text) per streamed delta
    request_ns: int = 0
    first_token_ns: int | None = None
    stream_end_ns: int | None = None
    finish_reason: str | None = None
    cancelled: str = ""  # why the stream was closed early ("" = it ran to its end)
    cancel_ns: int | None = None  # when the barge-in was asked for / seen
    closed_ns: int | None = None  # when the HTTP stream was closed after a cancel
    utterance_id: int = -1
    first_frame_ns: int | None = None  # first speech frame of the reply presented
    last_audible_ns: int | None = None  # last presented speech frame with sound
    interrupted: bool = False  # the avatar was cut (by anyone) before the reply was presented whole
    spoken: str = ""  # what goes into the history as the assistant's message

    def summary(self) -> str:
        ms = lambda a, b: f"{(a - b) / 1e6:.0f} ms" if a is not None and b is not None else "-"  # noqa: E731
        line = (f"turn {self.turn}: {len(self.pieces)} pieces, {len(self.text)} chars; first token "
                f"{ms(self.first_token_ns, self.request_ns)} after the request, first speech frame "
                f"{ms(self.first_frame_ns, self.first_token_ns)} after it")
        if self.cancelled:
            line += f"; stream closed {ms(self.closed_ns, self.cancel_ns)} after the barge-in ({self.cancelled})"
        if self.interrupted:
            line += f"; avatar cut, {len(self.spoken)} chars said"
        return line


class SpeechTrack:
    """What the timeline says about one reply: its chunks, which of them reached the screen,
    whether it was presented whole or cut by a new epoch. Fed events in arrival order."""

    def __init__(self, epoch: int, turn: int, since_ns: int):
        self.epoch, self.turn, self.since_ns = epoch, turn, since_ns
        self.utterance_id = -1
        self.chunks: dict[int, str] = {}  # chunk id -> its text (markers stripped by the parser)
        self.presented: set[int] = set()  # chunk ids with at least one speech frame presented
        self.first_frame_ns: int | None = None
        self.last_audible_ns: int | None = None
        self.done = False  # its last frame was presented
        self.cut: dict | None = None  # the supervisor's `epoch` event that ended it
        self.after_cut = False  # the player has presented a frame of a newer epoch

    def add(self, e: dict) -> None:
        actor, stage, data = e["actor"], e["stage"], e.get("data") or {}
        if actor == "supervisor" and stage == "epoch" and e["epoch"] > self.epoch and self.cut is None:
            self.cut = e
        elif actor == "parser" and stage == "turn_end" and data.get("turn") == self.turn:
            self.utterance_id = e["utterance_id"]
        elif actor == "parser" and stage == "parse" and e["result"] == "ok" and e["epoch"] == self.epoch:
            mine = (e["utterance_id"] == self.utterance_id if self.utterance_id >= 0
                    else data.get("opened_at_ns", 0) >= self.since_ns)
            if mine and data.get("text", "").strip():
                self.utterance_id = e["utterance_id"]
                self.chunks[e["chunk_id"]] = data["text"]
        elif actor == "player" and stage == "present":
            if e["epoch"] > self.epoch:
                self.after_cut = True
            elif (e["epoch"] == self.epoch and e["result"] == "ok" and data.get("kind") == "speech"
                  and e["utterance_id"] == self.utterance_id >= 0):
                self.presented.add(e["chunk_id"])
                self.first_frame_ns = self.first_frame_ns or e["ts_ns"]
                if data.get("rms", 0) > 0:
                    self.last_audible_ns = e["ts_ns"]
        elif (actor == "player" and stage == "utterance_presented" and e["epoch"] == self.epoch
              and e["utterance_id"] == self.utterance_id >= 0):
            self.done = True

    @property
    def finished(self) -> bool:
        """Nothing more will happen to this reply on screen."""
        return self.done or (self.cut is not None and self.after_cut)

    def spoken(self) -> str:
        """The text of the chunks that reached the screen, in order."""
        return "".join(self.chunks[c] for c in sorted(self.chunks) if c in self.presented).strip()


def next_turn(previous: int) -> int:
    """Turn numbers are one increasing sequence per session (INTERFACES.md §3), shared by every
    sender that names turns: milliseconds since the epoch keep ours above any earlier one's."""
    return max(previous + 1, time.time_ns() // 1_000_000)


def trimmed_history(messages: list[dict], max_messages: int = MAX_HISTORY_MESSAGES,
                    max_chars: int = MAX_HISTORY_CHARS) -> list[dict]:
    """The system message (if any) and as many of the latest messages as fit both bounds,
    starting at a user message."""
    head = messages[:1] if messages and messages[0]["role"] == "system" else []
    rest = messages[len(head):]
    kept, chars = [], 0
    for message in reversed(rest):
        if len(kept) >= max_messages or chars + len(message["content"]) > max_chars:
            break
        kept.append(message)
        chars += len(message["content"])
    kept.reverse()
    while kept and kept[0]["role"] != "user":
        kept.pop(0)
    return head + kept


def load_system_prompt(path: str | Path | None) -> str:
    """The system prompt from ``path`` (default: the shipped marker vocabulary); "" for none."""
    path = Path(path) if path else DEFAULT_SYSTEM_PROMPT
    try:
        if path.stat().st_size > MAX_SYSTEM_PROMPT_BYTES:
            raise ChatError(f"system prompt {path} is over {MAX_SYSTEM_PROMPT_BYTES // 1024} KiB")
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ChatError(f"cannot read the system prompt {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ChatError(f"system prompt {path} is not UTF-8 text") from None


def check_reachable(url: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """A TCP connection to the LLM server, before anything is started for it."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ChatError(f"--llm-url must be an http(s) URL such as http://127.0.0.1:8000/v1, not {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError as exc:
        raise ChatError(f"cannot reach the LLM server at {url}: {exc.strerror or exc}") from None


def describe_llm_error(exc: Exception, url: str) -> str:
    """One line for an error of the ``openai`` client."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return f"the LLM server at {url} did not answer in time ({exc})"
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc
        return f"lost the LLM server at {url}: {type(cause).__name__}: {cause}"
    if isinstance(exc, openai.APIStatusError):
        hint = " (is the API key in the environment variable --api-key-env names?)" if exc.status_code in (401, 403) else ""
        return f"the LLM server at {url} answered {exc.status_code}: {_error_message(exc)}{hint}"
    return f"the LLM server at {url} failed: {type(exc).__name__}: {exc}"


def _error_message(exc) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
        if message:
            return " ".join(str(message).split())[:300]
    return " ".join(str(exc.message).split())[:300]


def _shut_down(response) -> None:
    """Shut the stream's TCP connection down at once, whichever thread is reading it: the
    reader wakes with end-of-stream, the server sees FIN. (Closing the response from another
    thread would neither wake a blocked read nor be safe for the connection pool.)"""
    stream = getattr(response, "extensions", {}).get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class ChatClient:
    """A conversation spoken through ``session``: :meth:`ask` streams one reply, :meth:`barge_in`
    (any thread) cuts it. A new epoch on the timeline (a barge-in from anywhere) cuts it too."""

    def __init__(self, session: Session, llm: LLMSettings, system_prompt: str = "",
                 on_text: Callable[[str], None] | None = None):
        try:
            from openai import OpenAI, Timeout
        except ImportError:
            raise ChatError("personas chat needs the openai client: pip install 'openai>=1.40'") from None
        if session.timeline is None:
            raise ChatError("the session has no timeline (start or attach it first)")
        self.session, self.llm, self.on_text = session, llm, on_text
        self.openai = OpenAI(base_url=llm.url, api_key=llm.api_key or "not-needed", max_retries=0,
                             timeout=Timeout(llm.read_timeout_s, connect=CONNECT_TIMEOUT_S))
        self.history: list[dict] = [{"role": "system", "content": system_prompt}] if system_prompt else []
        self.turn = 0
        self.reply: Reply | None = None
        self.track: SpeechTrack | None = None
        self._feeder = Feeder(session.endpoints["ingress"], curve=session.curve)
        self._feeder.sock.setsockopt(zmq.SNDTIMEO, int(FEED_TIMEOUT_S * 1000))
        self._lock = threading.Condition()  # re-entrant: the follower cancels while holding it
        self._cut = threading.Event()  # the reply under way is to stop (asked here or seen on the timeline)
        self._streaming = False
        self._response = None  # the HTTP response being read, while a stream is open
        self._timer: threading.Timer | None = None  # --barge-in-after
        self._epoch_seen = -1  # the latest epoch the timeline has shown
        self._closed = threading.Event()
        timeline = session.timeline
        if timeline.keep:
            self._index = len(timeline.events)  # what came before this client is not its business
        else:
            timeline.drain()
            self._index = 0
        self._follower = threading.Thread(target=self._follow, name="chat-timeline", daemon=True)
        self._follower.start()

    # -- the conversation -------------------------------------------------------------------------
    def ask(self, text: str, barge_in_after: float | None = None) -> Reply:
        """Stream the reply to ``text`` into the ingress and wait until the avatar has said it or
        was cut; the history gets what was said. Raises ChatError (the history is unchanged)."""
        if len(text) > MAX_HISTORY_CHARS:  # the history trim would drop it and the LLM would answer nothing asked
            raise ChatError(f"a message of {len(text)} characters: at most {MAX_HISTORY_CHARS} are sent")
        status = self.session.control.call("status")
        if status is None:
            raise ChatError(f"no Personas supervisor answers at {self.session.endpoints['control']}")
        self.turn = next_turn(self.turn)
        reply = Reply(turn=self.turn, user=text, request_ns=time.monotonic_ns())
        with self._lock:  # an epoch begun since the status is not a cut of this reply: the follower saw it
            reply.epoch = max(status["supervisor"]["epoch"], self._epoch_seen)
            self._cut.clear()
            self.reply, self.track = reply, SpeechTrack(reply.epoch, reply.turn, reply.request_ns)
        messages = trimmed_history(self.history + [{"role": "user", "content": text}])
        try:
            self._stream(reply, messages, barge_in_after)
            self._wait_spoken(reply)
        finally:
            with self._lock:
                if self._timer is not None:
                    self._timer.cancel()
                self.reply, self._timer = None, None
        self.history += [{"role": "user", "content": text}] + (
            [{"role": "assistant", "content": reply.spoken}] if reply.spoken else [])
        self.history = trimmed_history(self.history)
        return reply

    def barge_in(self, reason: str) -> None:
        """Cut the reply under way (any thread): close the LLM stream, stop feeding, and
        interrupt the avatar (the control endpoint, else the ingress)."""
        with self._lock:
            if self.reply is None or self._cut.is_set():
                return
            turn = self.reply.turn
            self._cancel(reason, time.monotonic_ns())
        answer = self.session.control.call("barge_in", reason=f"chat: {reason}", turn=turn)
        if answer is None or not answer.get("ok"):  # no control token here: the ingress takes it too
            feeder = Feeder(self.session.endpoints["ingress"], curve=self.session.curve)
            try:
                feeder.control("barge_in", turn=turn)
            finally:
                feeder.close()

    def close(self) -> None:
        self._closed.set()
        self._follower.join(2)
        self._feeder.close()
        self.openai.close()

    # -- the stream ---------------------------------------------------------------------------------
    def _stream(self, reply: Reply, messages: list[dict], barge_in_after: float | None) -> None:
        """Read the completion and feed it, piece by piece, until it ends or is cut."""
        import openai

        options = {k: v for k, v in (("temperature", self.llm.temperature), ("seed", self.llm.seed)) if v is not None}
        with self._lock:
            self._streaming = True
        try:
            stream = self.openai.chat.completions.create(model=self.llm.model, messages=messages, stream=True,
                                                         max_tokens=self.llm.max_tokens, **options)
        except openai.OpenAIError as exc:
            with self._lock:
                self._streaming = False
            if self._cut.is_set():
                return
            raise ChatError(describe_llm_error(exc, self.llm.url)) from None
        with self._lock:
            self._response = stream.response
            if self._cut.is_set():  # a barge-in came while the request was being made
                _shut_down(stream.response)
        try:
            for chunk in stream:
                if self._cut.is_set():
                    break
                choice = chunk.choices[0] if chunk.choices else None
                reply.finish_reason = (choice.finish_reason if choice else None) or reply.finish_reason
                if choice is None or not choice.delta.content:
                    continue
                if reply.first_token_ns is None:
                    reply.first_token_ns = time.monotonic_ns()
                    self._start_timer(barge_in_after)
                if len(reply.text) + len(choice.delta.content) > MAX_REPLY_CHARS:
                    reply.finish_reason = "client_limit"
                    break
                self._feed(reply, choice.delta.content)
        except openai.OpenAIError as exc:
            if not self._cut.is_set():
                self._end_turn(reply)  # what came is spoken
                raise ChatError(describe_llm_error(exc, self.llm.url)) from None
        finally:
            with self._lock:
                self._response, self._streaming = None, False
            stream.close()
            reply.stream_end_ns = time.monotonic_ns()
            if reply.cancelled:
                reply.closed_ns = reply.stream_end_ns
        if not self._cut.is_set():
            self._end_turn(reply)

    def _start_timer(self, seconds: float | None) -> None:
        if seconds is None:
            return
        with self._lock:
            self._timer = threading.Timer(seconds, self.barge_in, args=(f"--barge-in-after {seconds:g}",))
            self._timer.daemon = True
            self._timer.start()

    def _feed(self, reply: Reply, piece: str) -> None:
        for start in range(0, len(piece), INGRESS_PIECE_CHARS):
            self._send(lambda: self._feeder.token(piece[start:start + INGRESS_PIECE_CHARS], turn=reply.turn))
        reply.pieces.append((time.monotonic_ns(), piece))
        reply.text += piece
        if self.on_text is not None:
            self.on_text(piece)

    def _end_turn(self, reply: Reply) -> None:
        self._send(lambda: self._feeder.control("end", turn=reply.turn))

    def _send(self, send: Callable[[], None]) -> None:
        try:
            send()
        except zmq.Again:
            raise ChatError(f"the Personas ingress at {self.session.endpoints['ingress']} took nothing "
                            f"for {FEED_TIMEOUT_S:.0f} s") from None

    def _cancel(self, reason: str, at_ns: int) -> None:
        """Stop the reply under way (the caller holds the lock): close its stream if one is open."""
        if self.reply is None or self._cut.is_set():
            return
        self._cut.set()
        if self._streaming:
            self.reply.cancelled, self.reply.cancel_ns = reason, at_ns
            if self._response is not None:
                _shut_down(self._response)

    # -- the avatar ---------------------------------------------------------------------------------
    def _wait_spoken(self, reply: Reply) -> None:
        """Until the reply was presented to its end, or cut and the player is on the new epoch."""
        if not reply.text.strip() and not self._cut.is_set():
            return  # nothing to say
        budget = SPEAK_TIMEOUT_S + SPEAK_S_PER_CHAR * len(reply.text)
        deadline = time.monotonic() + budget
        with self._lock:
            while not self.track.finished:
                if self._cut.is_set() and deadline - time.monotonic() > CUT_TIMEOUT_S:
                    budget, deadline = CUT_TIMEOUT_S, time.monotonic() + CUT_TIMEOUT_S
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._lock.wait(min(remaining, 0.25))
            track = self.track
            reply.utterance_id, reply.first_frame_ns = track.utterance_id, track.first_frame_ns
            reply.last_audible_ns = track.last_audible_ns
            reply.interrupted = track.cut is not None and not track.done
            reply.spoken = track.spoken() if reply.interrupted or reply.cancelled else reply.text.strip()
            finished = track.finished
        if not finished:
            what = "present a frame of the new epoch" if self._cut.is_set() else "finish the reply"
            raise ChatError(f"the avatar did not {what} within {budget:.0f} s (`personas-supervisor status` says why)")

    def _follow(self) -> None:
        """Every timeline event to the reply under way; a new epoch (a barge-in from anywhere)
        closes its stream."""
        timeline = self.session.timeline
        while not self._closed.is_set():
            if timeline.wait_for(lambda e: True, FOLLOW_POLL_S, self._index if timeline.keep else 0) is None:
                continue
            if timeline.keep:
                end = len(timeline.events)
                fresh, self._index = timeline.events[self._index:end], end
            else:
                fresh = timeline.drain()
            with self._lock:
                for e in fresh:
                    if e["actor"] == "supervisor" and e["stage"] == "epoch":
                        self._epoch_seen = max(self._epoch_seen, e["epoch"])
                    if self.track is None:
                        continue
                    seen = self.track.cut
                    self.track.add(e)
                    if seen is None and self.track.cut is not None:
                        cut = self.track.cut
                        self._cancel(f"barge-in: {cut['data'].get('reason', '?')}", cut["ts_ns"])
                self._lock.notify_all()


# -- the command -------------------------------------------------------------------------------------
@dataclass
class ChatOptions:
    llm: LLMSettings
    system_prompt: str
    system: str = "auto"  # auto | attach | start
    barge_in_after: float | None = None
    record: str | None = None
    report: str | None = None
    log: str | None = None


def open_session(config_path: str | None, overrides, mode: str, record: str | None, log: str | None,
                 echo: Callable[[str], None]) -> tuple[Session, bool]:
    """The system to speak on: the one answering at the configured control endpoint, or one
    started here (`auto` decides by who answers). Returns (session, started here)."""
    session = Session(config_path, overrides, record=record, log=log)
    running = ControlClient(session.endpoints["control"], timeout_ms=500, curve=session.curve).call("ping") is not None
    if mode == "attach" or (mode == "auto" and running):
        if not running:
            raise ChatError(f"no Personas supervisor answers at {session.endpoints['control']} "
                            "(start one with `personas-supervisor up`, or use --system start)")
        if record:
            raise ChatError("--record needs a system started here (--system start)")
        session.timeline = TimelineRecorder(session.endpoints["timeline"], keep=False, curve=session.curve)
        if not session.timeline.wait_connected(5):
            session.stop()
            raise ChatError(f"no timeline events from {session.endpoints['timeline']}")
        echo(f"speaking on the system at {session.endpoints['control']}")
        return session, False
    # The supervisor's output goes to a file, not into the conversation.
    log = log or str(Path(tempfile.gettempdir()) / f"personas-chat-{os.getpid()}.log")
    session.log_path = log
    echo(f"starting Personas (supervisor log: {log}) ...")
    started = time.monotonic()
    try:
        session.start()
    except SessionError as exc:
        session.stop()
        raise ChatError(f"{exc} (supervisor log: {log})") from None
    # A chat may last hours: a timeline that keeps only what was not read yet.
    kept, session.timeline = session.timeline, TimelineRecorder(session.endpoints["timeline"], keep=False,
                                                                curve=session.curve)
    kept.close()
    session.timeline.wait_connected(5)
    echo(f"Personas up in {time.monotonic() - started:.1f} s")
    return session, True


def run_chat(options: ChatOptions, config_path: str | None, overrides, message: str | None,
             echo: Callable[[str], None], out: Callable[[str], None]) -> int:
    """`personas chat`: one MESSAGE (a failure raises ChatError), or lines from stdin (a failed
    reply is reported and the conversation goes on; exit code 1 if any failed)."""
    check_reachable(options.llm.url)
    session, started = open_session(config_path, overrides, options.system, options.record, options.log, echo)
    client = None
    try:
        client = ChatClient(session, options.llm, options.system_prompt, on_text=out)
        if message is not None:
            _speak(client, message, options, echo, out)
            return 0
        return _conversation(client, options, echo, out)
    finally:
        if client is not None:
            client.close()
        session.stop()
        if started:
            echo("Personas stopped")


def _conversation(client: ChatClient, options: ChatOptions, echo, out) -> int:
    """Lines from stdin, one message each. On a terminal a line typed while the avatar speaks
    cuts it (an empty one only cuts; another is the next message); from a pipe each line waits
    for the reply before it. Ctrl-C cuts a reply; at the prompt it ends the chat, as EOF does."""
    interactive = sys.stdin.isatty()
    lines: queue.Queue = queue.Queue(STDIN_QUEUE_LINES)
    threading.Thread(target=_read_lines, args=(lines,), name="chat-stdin", daemon=True).start()
    pending, failed, ending = None, False, False
    while not ending:
        if pending is None:
            if interactive:
                sys.stderr.write("you> ")
                sys.stderr.flush()
            try:
                pending = _next_line(lines)
            except KeyboardInterrupt:
                break
            if pending is None:  # end of input
                break
        text, pending = pending, None
        if not text.strip():
            continue

        def typed() -> None:
            nonlocal pending, ending
            if not interactive or lines.empty():
                return
            line = lines.get_nowait()
            if line is None:
                ending = True  # end of input: this reply is the last one
                return
            client.barge_in("a line was typed")
            pending = line if line.strip() else None

        try:
            _speak(client, text, options, echo, out, typed)
        except ChatError as exc:
            echo(f"error: {exc}")
            failed = True
    return 1 if failed else 0


def _speak(client: ChatClient, text: str, options: ChatOptions, echo, out, poll: Callable[[], None] = lambda: None) -> Reply:
    """``client.ask`` in a worker thread, so that Ctrl-C (and ``poll``) can cut it from here."""
    result: dict = {}

    def work() -> None:
        try:
            result["reply"] = client.ask(text, options.barge_in_after)
        except ChatError as exc:
            result["error"] = exc
        except Exception as exc:  # zmq, an unexpected reply: say what it was, not a KeyError below
            result["error"] = ChatError(f"{type(exc).__name__}: {exc}")

    worker = threading.Thread(target=work, name="chat-reply", daemon=True)
    worker.start()
    while worker.is_alive():
        try:
            worker.join(0.1)
            poll()
        except KeyboardInterrupt:
            echo("(barge-in)")
            client.barge_in("Ctrl-C")
    out("\n")
    if "error" in result:
        raise result["error"]
    reply = result["reply"]
    if options.report:
        with open(options.report, "a", encoding="utf-8") as f:
            f.write(json.dumps(asdict(reply), separators=(",", ":")) + "\n")
    echo(reply.summary())
    return reply


def _next_line(lines: queue.Queue) -> str | None:
    while True:  # a timed wait, so that Ctrl-C is seen at once
        try:
            return lines.get(timeout=0.5)
        except queue.Empty:
            continue


def _read_lines(lines: queue.Queue) -> None:
    for line in sys.stdin:
        lines.put(line.rstrip("\n"))
    lines.put(None)
