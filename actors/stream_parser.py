"""The stream parser's state machine, free of sockets (the parser actor feeds it).

It consumes text one character at a time, so its output depends only on the characters
it has seen, never on how the LLM split them into tokens (a property test holds it to
that). Rules, in the order they apply to each character:

Markers
    ``<v:COMMAND:VALUE>`` with COMMAND ``[A-Za-z_][A-Za-z0-9_]*`` and VALUE
    ``[A-Za-z0-9_.+-]+`` (each at most 64 chars). The tag is stripped from the text and
    emitted the moment its ``>`` arrives, with ``timestamp_offset`` = the character
    position in the current chunk where it stood.
    A ``<`` not followed by ``v:`` is ordinary text. After ``<v:`` we are committed: a
    character that cannot continue the tag (a space, a second ``:`` ...) makes it
    *malformed*: the tag text is dropped and an error reported. What follows is held
    in a skip window of at most 64 characters: if a ``>`` arrives inside it, the
    window is dropped too (``<v:bad tag>`` vanishes whole); a newline, ``<``, ``.``,
    ``?``, ``!``, the 64-character limit or the end of the turn release the window as
    ordinary text instead. A tag still open at the end of the turn is dropped. So a
    bad tag never stalls the stream and never gets spoken.

Sentence boundaries
    ``?``, ``!`` and newline close a chunk at once. ``.`` closes a chunk unless
    * the word before it is a known abbreviation (Dr, Mr, Mrs, Ms, Prof, St, Jr, Sr,
      vs, No, Fig, approx, ...), a single letter (initials, the parts of "e.g."), or
      contains a dot itself ("e.g", "U.S") -- then it is not a boundary;
    * the character before it is a digit -- then the next character decides: a digit
      continues the number ("3.14"), anything else closes the chunk before it.
    A chunk with no letter or digit in it (e.g. a lone "..." ) is not emitted; its text
    stays at the front of the next chunk. A chunk that reaches ``max_chunk_chars``
    (counting every character, punctuation runs included) is split at its last space
    (never before a marker already placed in it); if nothing in it is speakable it is
    dropped with an error.

Clause cuts (optional, ``ChunkPolicy``)
    A clause mark (, ; : – —) closes the first chunk of a turn when ``clause_first`` is
    set, and any chunk that has reached ``target_tokens``, provided the chunk already
    has ``min_words`` words. With the default policy only sentences close chunks.

End of turn
    ``end()`` closes what is buffered as the final chunk of the utterance, even when
    it is empty, so downstream always learns where the utterance ends.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ABBREVIATIONS = frozenset(
    "dr mr mrs ms mx prof st jr sr vs no fig approx dept est inc ltd mt gen col capt sgt rev hon".split()
)
TAG_PREFIX = "<v:"
SKIP_RELEASE = frozenset("\n<.?!")
MAX_TAG_FIELD = 64
_COMMAND_FIRST = re.compile(r"[A-Za-z_]")
_COMMAND_REST = re.compile(r"[A-Za-z0-9_]")
_VALUE_CHAR = re.compile(r"[A-Za-z0-9_.+\-]")


@dataclass(frozen=True)
class ChunkPolicy:
    """How eagerly chunks close besides sentence ends (set live by the TTS's rate controller).

    ``clause_first``: the first chunk of a turn may end at a clause mark (, ; : – —) once it
    has ``min_words`` words, so speech starts sooner. ``target_tokens``: later chunks also
    end at a clause mark once they hold this many tokens (0 = sentences only).
    """

    clause_first: bool = False
    min_words: int = 2
    target_tokens: int = 0


SENTENCE_POLICY = ChunkPolicy()
CLAUSE_MARKS = frozenset(",;:–—")


@dataclass(frozen=True)
class ParsedChunk:
    sequence_id: int
    text: str
    boundary: str
    final: bool
    marker_count: int
    tokens: int
    closed_at_ns: int
    opened_at_ns: int = 0  # arrival of the chunk's first token


@dataclass(frozen=True)
class ParsedMarker:
    sequence_id: int
    command: str
    value: str
    offset: int
    index_in_chunk: int


@dataclass(frozen=True)
class ParseError:
    code: str
    detail: str
    raw: str


ParseEvent = ParsedChunk | ParsedMarker | ParseError


class StreamParser:
    """Character-level demultiplexer: text chunks for the TTS, markers for the driver."""

    def __init__(self, max_chunk_chars: int = 400, first_sequence_id: int = 0, policy: ChunkPolicy = SENTENCE_POLICY):
        self.max_chunk_chars = max_chunk_chars
        self.policy = policy
        self._first_in_turn = True
        self.sequence_id = first_sequence_id
        self._reset_chunk()
        self._tag: str | None = None
        self._skip: list[str] | None = None
        self._digit_dot_pending = False
        self._boundary_token_ns = 0
        self._now_ns = 0

    # -- public surface ---------------------------------------------------------------
    def feed(self, token: str, now_ns: int = 0) -> list[ParseEvent]:
        out: list[ParseEvent] = []
        self._tokens += 1
        self._now_ns = now_ns
        if not self._opened_ns:
            self._opened_ns = now_ns
        for ch in token:
            self._push(ch, out)
        return out

    def end(self, now_ns: int = 0) -> list[ParseEvent]:
        """End of the LLM turn: resolve pending state, emit the final chunk."""
        out: list[ParseEvent] = []
        self._now_ns = now_ns
        self._release_skip(out)
        if self._digit_dot_pending:
            self._digit_dot_pending = False
            self._close(".", out)
        if self._tag is not None:
            out.append(ParseError("unclosed_marker", "marker still open at end of turn; dropped", self._tag))
            self._tag = None
        self._emit(self._text_str(), "end", out, final=True)
        self._first_in_turn = True
        return out

    def reset(self) -> None:
        """Barge-in: forget everything buffered (the sequence counter keeps counting)."""
        self._reset_chunk()
        self._tag = None
        self._skip = None
        self._digit_dot_pending = False
        self._first_in_turn = True

    def snapshot(self) -> dict:
        """The whole state, as plain values: with :meth:`restore` a new parser continues
        exactly where this one was (the open chunk, a tag half read, the sequence counter)."""
        return {"sequence_id": self.sequence_id, "first_in_turn": self._first_in_turn, "text": self._text_str(),
                "markers_in_chunk": self._markers_in_chunk, "last_marker_offset": self._last_marker_offset,
                "tokens": self._tokens, "opened_ns": self._opened_ns, "tag": self._tag,
                "skip": None if self._skip is None else "".join(self._skip),
                "digit_dot_pending": self._digit_dot_pending, "boundary_token_ns": self._boundary_token_ns}

    def restore(self, state: dict) -> None:
        """Take a :meth:`snapshot`; a value of the wrong type or size raises ValueError."""
        def text(key: str, optional: bool = False) -> str | None:
            value = state.get(key)
            if value is None and optional:
                return None
            if not isinstance(value, str) or len(value) > self.max_chunk_chars + MAX_TAG_FIELD * 2:
                raise ValueError(f"parser state {key!r} must be text of at most {self.max_chunk_chars} characters")
            return value

        def number(key: str) -> int:
            value = state.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"parser state {key!r} must be a non-negative integer")
            return value

        restored = {"sequence_id": number("sequence_id"), "text": text("text"), "tag": text("tag", True),
                    "skip": text("skip", True), "markers_in_chunk": number("markers_in_chunk"),
                    "last_marker_offset": number("last_marker_offset"), "tokens": number("tokens"),
                    "opened_ns": number("opened_ns"), "boundary_token_ns": number("boundary_token_ns")}
        self.sequence_id, self._text = restored["sequence_id"], list(restored["text"])
        self._tag = restored["tag"]
        self._skip = None if restored["skip"] is None else list(restored["skip"])
        self._markers_in_chunk, self._last_marker_offset = restored["markers_in_chunk"], restored["last_marker_offset"]
        self._tokens, self._opened_ns = restored["tokens"], restored["opened_ns"]
        self._boundary_token_ns = restored["boundary_token_ns"]
        self._first_in_turn = bool(state.get("first_in_turn", True))
        self._digit_dot_pending = bool(state.get("digit_dot_pending", False))

    @property
    def opened_at_ns(self) -> int:
        """When the open chunk's first token arrived (0 when nothing is buffered)."""
        return self._opened_ns if self._text or self._tag else 0

    @property
    def buffered_chars(self) -> int:
        return len(self._text) + (len(self._tag) if self._tag else 0)

    # -- character machine ----------------------------------------------------------------
    def _reset_chunk(self) -> None:
        self._text: list[str] = []
        self._markers_in_chunk = 0
        self._last_marker_offset = 0
        self._tokens = 0
        self._opened_ns = 0

    def _text_str(self) -> str:
        return "".join(self._text)

    def _push(self, ch: str, out: list[ParseEvent]) -> None:
        if self._skip is not None:
            self._push_skip(ch, out)
            return
        if self._tag is not None:
            self._push_tag(ch, out)
            return
        if self._digit_dot_pending:
            self._digit_dot_pending = False
            if not ch.isdigit():
                self._close(".", out)
        if ch == "<":
            self._tag = ch
            return
        self._text.append(ch)
        if ch in "?!":
            self._boundary_token_ns = self._now_ns
            self._close(ch, out)
        elif ch == "\n":
            self._boundary_token_ns = self._now_ns
            self._close("\n", out)
        elif ch == ".":
            self._boundary_token_ns = self._now_ns
            self._on_dot(out)
        elif ch in CLAUSE_MARKS:
            self._on_clause(out)
        self._check_limit(out)

    def _check_limit(self, out: list[ParseEvent]) -> None:
        """After every character kept, whatever it is ("???..." never closes a chunk)."""
        if len(self._text) >= self.max_chunk_chars:
            self._split_at_limit(out)

    def _on_dot(self, out: list[ParseEvent]) -> None:
        before = self._text[-2] if len(self._text) >= 2 else ""
        if before.isdigit():
            self._digit_dot_pending = True
            return
        if _is_abbreviation(_word_before_dot(self._text)):
            return
        self._close(".", out)

    def _on_clause(self, out: list[ParseEvent]) -> None:
        policy = self.policy
        words = sum(1 for w in self._text_str().split() if any(c.isalnum() for c in w))
        if words < policy.min_words:
            return
        first = policy.clause_first and self._first_in_turn
        large = policy.target_tokens > 0 and self._tokens >= policy.target_tokens
        if first or large:
            self._boundary_token_ns = self._now_ns
            self._close("clause", out)

    def _push_tag(self, ch: str, out: list[ParseEvent]) -> None:
        tag = self._tag + ch
        if len(tag) <= len(TAG_PREFIX):
            if TAG_PREFIX.startswith(tag):
                self._tag = tag
                return
            # Not a marker after all: "<" is literal text; re-run the rest as text.
            self._tag = None
            pending = tag[1:]
            self._text.append("<")
            self._check_limit(out)
            for c in pending:
                self._push(c, out)
            return
        if ch == ">" and _complete_tag(tag):
            self._tag = None
            command, value = tag[len(TAG_PREFIX):-1].split(":", 1)
            offset = len(self._text)
            out.append(ParsedMarker(self.sequence_id, command, value, offset, self._markers_in_chunk))
            self._markers_in_chunk += 1
            self._last_marker_offset = offset
            return
        if _valid_tag_prefix(tag):
            self._tag = tag
            return
        # Committed to a tag and it broke: drop it, report, hold what follows briefly.
        self._tag = None
        out.append(ParseError("malformed_marker", f"unexpected {ch!r} in marker; tag dropped", tag))
        if ch != ">":
            self._skip = []
            self._push_skip(ch, out)

    def _push_skip(self, ch: str, out: list[ParseEvent]) -> None:
        if ch == ">":
            self._skip = None  # the rest of the broken tag: drop it
        elif ch in SKIP_RELEASE or len(self._skip) >= MAX_TAG_FIELD:
            self._release_skip(out)
            self._push(ch, out)
        else:
            self._skip.append(ch)

    def _release_skip(self, out: list[ParseEvent]) -> None:
        held, self._skip = self._skip, None
        for c in held or ():
            self._push(c, out)

    # -- chunk emission -------------------------------------------------------------------
    def _close(self, boundary: str, out: list[ParseEvent]) -> None:
        text = self._text_str()
        if not any(c.isalnum() for c in text):
            return  # nothing speakable yet: keep it as the front of the next chunk
        self._emit(text, boundary, out, final=False)

    def _split_at_limit(self, out: list[ParseEvent]) -> None:
        text = self._text_str()
        if not any(c.isalnum() for c in text):  # a run of punctuation: nothing to speak in it
            out.append(ParseError("unspeakable", f"{len(text)} characters without a letter or digit dropped", text[:80]))
            self._text, self._last_marker_offset = [], 0
            return
        cut = max(text.rfind(" ") + 1, self._last_marker_offset)
        if cut <= 0:
            cut = len(text)
        head, rest = text[:cut], text[cut:]
        self._boundary_token_ns = self._now_ns
        self._emit(head, "limit", out, final=False)
        self._text = list(rest)

    def _emit(self, text: str, boundary: str, out: list[ParseEvent], *, final: bool) -> None:
        out.append(
            ParsedChunk(
                sequence_id=self.sequence_id,
                text=text,
                boundary=boundary,
                final=final,
                marker_count=self._markers_in_chunk,
                tokens=self._tokens,
                closed_at_ns=self._boundary_token_ns if boundary != "end" else self._now_ns,
                opened_at_ns=self._opened_ns or self._now_ns,
            )
        )
        self.sequence_id += 1
        self._first_in_turn = False
        self._reset_chunk()


def _word_before_dot(text: list[str]) -> str:
    """The word ending just before the final '.', without leading brackets/quotes."""
    i = len(text) - 2
    chars = []
    while i >= 0 and not text[i].isspace():
        chars.append(text[i])
        i -= 1
    return "".join(reversed(chars)).lstrip("([{\"'")


def _is_abbreviation(word: str) -> bool:
    if not word:
        return False
    if word.lower() in ABBREVIATIONS:
        return True
    if len(word) == 1 and word.isalpha():
        return True
    return "." in word and all(len(part) <= 2 for part in word.split("."))


def _valid_tag_prefix(tag: str) -> bool:
    """Can ``tag`` (which starts with '<v:') still grow into a complete marker?"""
    body = tag[len(TAG_PREFIX):]
    command, sep, value = body.partition(":")
    if not command:
        return not sep
    if len(command) > MAX_TAG_FIELD or not _COMMAND_FIRST.fullmatch(command[0]):
        return False
    if not all(_COMMAND_REST.fullmatch(c) for c in command[1:]):
        return False
    if not sep:
        return True
    return len(value) <= MAX_TAG_FIELD and all(_VALUE_CHAR.fullmatch(c) for c in value)


def _complete_tag(tag: str) -> bool:
    body = tag[len(TAG_PREFIX):-1]
    command, sep, value = body.partition(":")
    return bool(sep and value and command) and _valid_tag_prefix(tag[:-1])
