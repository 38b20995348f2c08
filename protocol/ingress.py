"""Ingress family: what any program may send to the parser's PULL socket.

One single-frame ZMQ message per item:

* valid UTF-8 text (not starting with a msgpack map marker) -> one token;
* a msgpack map -> a control message: ``{"type": "token", "text": str}``,
  ``{"type": "end"}`` or ``{"type": "barge_in"}``, each with an optional ``"turn": int``.

A turn is one LLM reply, numbered by its sender (any increasing integers). Once a turn has
ended (``end``) or been interrupted (``barge_in``, from here or the control endpoint),
tokens of it that are still in flight are dropped on arrival, so text queued before an
interrupt is never spoken after it. Items naming no turn (a plain UTF-8 frame) are not judged
by turn; a barge-in naming none interrupts the latest turn named.

A frame whose first byte is a msgpack map marker is tried as msgpack first and falls
back to UTF-8 (a map marker is never a valid UTF-8 start byte except 0xDE/0xDF, whose
text forms cannot unpack as a sane map). Everything else is a ProtocolError.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from .envelope import ProtocolError, brief, unpack_header
from .limits import INGRESS_MAX_BYTES

_MAP_MARKERS = frozenset(range(0x80, 0x90)) | {0xDE, 0xDF}


#: Control characters that mean something in text; every other one (NUL, escape, the C1
#: range...) is removed before parsing: no engine is asked to speak it.
_KEPT_CONTROLS = {"\n": "\n", "\t": " ", "\r": "\n"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def speakable(text: str) -> tuple[str, int]:
    """``text`` without control characters (tab becomes a space, CR a newline, CR LF one
    newline); returns it and how many characters were removed or replaced."""
    if not _CONTROL.search(text):
        return text, 0
    text = text.replace("\r\n", "\n")
    changed = len(_CONTROL.findall(text))
    return _CONTROL.sub(lambda m: _KEPT_CONTROLS.get(m.group(), ""), text), changed - text.count("\n")


#: ``turn`` of an item that names none (a barge-in naming none interrupts the latest turn named).
LATEST_TURN = -1
#: The ``turn`` of an epoch that interrupts no turn (a restart, a failed recovery).
NO_TURN = -2
#: Turn numbers are sender-chosen, within what msgpack and every language's integers hold.
MAX_TURN = 2**53


@dataclass(frozen=True)
class IngressToken:
    text: str
    #: Control characters taken out of it (see :func:`speakable`).
    removed: int = 0
    turn: int = LATEST_TURN

    @classmethod
    def of(cls, text: str, turn: int = LATEST_TURN) -> "IngressToken":
        clean, removed = speakable(text)
        return cls(clean, removed, turn)


@dataclass(frozen=True)
class IngressEnd:
    """End of the LLM turn: flush what is buffered as the last chunk."""

    turn: int = LATEST_TURN


@dataclass(frozen=True)
class IngressBargeIn:
    """The user interrupted: stop speaking now; the turn (default: the latest) is over."""

    turn: int = LATEST_TURN


IngressItem = IngressToken | IngressEnd | IngressBargeIn


def parse_ingress(frames: list[bytes]) -> IngressItem:
    if len(frames) != 1:
        raise ProtocolError("malformed", f"ingress messages are single-frame, got {len(frames)} frames")
    raw = frames[0]
    if len(raw) > INGRESS_MAX_BYTES:
        raise ProtocolError("oversized", f"ingress frame of {len(raw)} bytes, limit {INGRESS_MAX_BYTES}")
    if raw and raw[0] in _MAP_MARKERS:
        try:
            header = unpack_header(raw)
        except ProtocolError as error:
            try:
                return IngressToken.of(bytes(raw).decode("utf-8"))
            except UnicodeDecodeError:
                raise error from None
        return _control(header)
    try:
        return IngressToken.of(bytes(raw).decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ProtocolError("malformed", f"ingress frame is neither UTF-8 text nor a msgpack map ({exc.reason} at byte {exc.start})") from None


def turn_of(value) -> int:
    """A turn number as sent (absent = the latest turn); anything else is a ProtocolError."""
    if value is None:
        return LATEST_TURN
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TURN:
        raise ProtocolError("malformed", f"'turn' must be an integer in 0..2**53, got {brief(value)}")
    return value


def _control(header: dict) -> IngressItem:
    kind = header.get("type")
    if kind == "token":
        text = header.get("text")
        if not isinstance(text, str):
            raise ProtocolError("malformed", "token message needs a string 'text'")
        return IngressToken.of(text, turn_of(header.get("turn")))
    if kind == "end":
        return IngressEnd(turn_of(header.get("turn")))
    if kind == "barge_in":
        return IngressBargeIn(turn_of(header.get("turn")))
    raise ProtocolError("unknown_type", f"unknown ingress message type {brief(kind)}")


_PIECE = re.compile(r"<v:[^>]*>|\n|\s*[^\s<]+|\s+|<")


def tokenize_like_llm(text: str, seed: int = 0) -> list[str]:
    """Split text the way an LLM streams it: word pieces of 1-6 characters with the
    leading space attached, newlines alone, and markers cut into several tokens. Every
    sender that stands in for an LLM (the CLI, the web gateway's /say, tests) uses this."""
    rng = random.Random(seed)
    tokens: list[str] = []
    for match in _PIECE.finditer(text):
        piece = match.group()
        if piece.startswith("<v:"):
            cuts = sorted(rng.sample(range(1, len(piece)), k=min(3, len(piece) - 1)))
            tokens += [piece[a:b] for a, b in zip([0, *cuts], [*cuts, len(piece)])]
            continue
        while piece:
            n = len(piece) if len(piece) <= 3 else rng.randint(2, 6)
            tokens.append(piece[:n])
            piece = piece[n:]
    return tokens
