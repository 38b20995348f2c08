"""The versioned wire envelope shared by every actor.

A message is one ZMQ multipart message:

    frame 0      msgpack map {"v": PROTOCOL_VERSION, "type": <name>, <fields>...}
    frame 1..n   raw payloads (PCM, pixels), named by the class's PAYLOADS, in order

Large arrays never travel inside msgpack. Every message family is a frozen dataclass
registered here by its ``TYPE``; decoding checks the version, the type, each field's
type and the payload count, then runs the class's own ``validate()``. Anything off
raises :class:`ProtocolError`, which actors turn into a timeline error event.

A header field may also be a *record*: a frozen dataclass with ``as_dict()`` and a
validating ``from_dict()`` (e.g. :class:`protocol.provenance.Provenance`). It travels as
a msgpack map and arrives as the dataclass again.
"""

from __future__ import annotations

import dataclasses
import reprlib
import types
import typing
from typing import Any, ClassVar, Iterable

import msgpack

from .limits import MAX_HEADER_BYTES, MAX_NESTING, MAX_PAYLOAD_BYTES, MAX_PAYLOAD_FRAMES, MSGPACK_LIMITS, PROTOCOL_VERSION

#: A raw payload: bytes on send, a read-only memoryview after a zero-copy receive.
Buffer = typing.Union[bytes, bytearray, memoryview]


_BRIEF = reprlib.Repr()
_BRIEF.maxlevel, _BRIEF.maxstring, _BRIEF.maxother, _BRIEF.maxtuple, _BRIEF.maxlist, _BRIEF.maxdict = 2, 60, 60, 4, 4, 4


def brief(value: Any) -> str:
    """A short repr of untrusted input for an error message: bounded in depth and length,
    so formatting the error can never itself fail (a 1000-deep array, a 60 kB string)."""
    try:
        return _BRIEF.repr(value)
    except Exception:  # a hostile __repr__ cannot reach here from msgpack, but the rule is absolute
        return f"<{type(value).__name__}>"


def nesting_depth(value: Any, limit: int) -> int:
    """How deep maps and arrays nest in ``value``, walked without recursion; stops counting
    past ``limit``."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list, tuple)):
            deepest = max(deepest, depth)
            if depth > limit:
                return depth
            children = list(item.keys()) + list(item.values()) if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


class ProtocolError(ValueError):
    """A message that cannot be accepted. ``code`` is a short machine-readable reason."""

    def __init__(self, code: str, detail: str):
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.header: dict | None = None  # the unpacked header, when the frame got that far


@dataclasses.dataclass(frozen=True)
class Message:
    """Base of every message family. Subclasses set TYPE and, if any, PAYLOADS."""

    TYPE: ClassVar[str] = ""
    PAYLOADS: ClassVar[tuple[str, ...]] = ()

    def validate(self) -> None:
        """Semantic checks beyond field types; raise ProtocolError."""


_REGISTRY: dict[str, type[Message]] = {}
_FIELD_CHECKS: dict[type[Message], dict[str, tuple[Any, bool]]] = {}


def register(cls: type[Message]) -> type[Message]:
    """Class decorator: make a message family known to :func:`decode`."""
    if not cls.TYPE or cls.TYPE in _REGISTRY:
        raise TypeError(f"message type {cls.TYPE!r} missing or registered twice")
    hints = typing.get_type_hints(cls)
    checks = {}
    for field in dataclasses.fields(cls):
        if field.name in cls.PAYLOADS:
            continue
        required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        checks[field.name] = (hints[field.name], required)
    _REGISTRY[cls.TYPE] = cls
    _FIELD_CHECKS[cls] = checks
    return cls


def known_types() -> list[str]:
    return sorted(_REGISTRY)


def field_names(type_name: str) -> list[str]:
    """The header fields of a registered message type (what a sender may set)."""
    return sorted(f for f in _REGISTRY[type_name].__dataclass_fields__ if f != "TYPE")


def pack_header(header: dict) -> bytes:
    return msgpack.packb(header, use_bin_type=True)


def unpack_header(raw: Buffer) -> dict:
    """Unpack one msgpack map with explicit limits; never trusts declared lengths."""
    if len(raw) > MAX_HEADER_BYTES:
        raise ProtocolError("oversized", f"header is {len(raw)} bytes, limit {MAX_HEADER_BYTES}")
    try:
        header = msgpack.unpackb(raw, raw=False, use_list=False, strict_map_key=True, **MSGPACK_LIMITS)
    except Exception as exc:  # msgpack raises many types for garbage; all mean the same here
        raise ProtocolError("malformed", f"header is not valid msgpack ({type(exc).__name__}: {exc})") from None
    if not isinstance(header, dict):
        raise ProtocolError("malformed", f"header must be a map, got {type(header).__name__}")
    if nesting_depth(header, MAX_NESTING) > MAX_NESTING:
        raise ProtocolError("malformed", f"header nests deeper than {MAX_NESTING} levels")
    return header


def encode(msg: Message) -> list[Buffer]:
    """Message -> list of frames ready for ``socket.send_multipart``."""
    header: dict[str, Any] = {"v": PROTOCOL_VERSION, "type": msg.TYPE}
    for field in dataclasses.fields(msg):
        if field.name not in msg.PAYLOADS:
            header[field.name] = _to_wire(getattr(msg, field.name))
    return [pack_header(header)] + [getattr(msg, name) for name in msg.PAYLOADS]


def decode(frames: list[Any]) -> Message:
    """Frames (bytes or zmq.Frame) -> validated Message, or ProtocolError."""
    if not frames:
        raise ProtocolError("malformed", "empty message")
    if len(frames) > 1 + MAX_PAYLOAD_FRAMES:
        raise ProtocolError("malformed", f"{len(frames)} frames, limit {1 + MAX_PAYLOAD_FRAMES}")
    buffers = [f.buffer if hasattr(f, "buffer") else f for f in frames]
    header = unpack_header(buffers[0])
    try:
        return from_header(header, buffers[1:])
    except ProtocolError as exc:
        exc.header = header  # so a consumer can still return the credit such a message spent
        raise
    except Exception as exc:  # a check that tripped over hostile values: the same refusal
        error = ProtocolError("malformed", f"{brief(header.get('type'))}: {type(exc).__name__}")
        error.header = header
        raise error from None


def from_header(header: dict, payloads: Iterable[Buffer] = ()) -> Message:
    version = header.get("v")
    if version != PROTOCOL_VERSION:
        raise ProtocolError("version", f"protocol version {brief(version)}, this build speaks {PROTOCOL_VERSION}")
    type_name = header.get("type")
    cls = _REGISTRY.get(type_name) if isinstance(type_name, str) else None
    if cls is None:
        raise ProtocolError("unknown_type", f"unknown message type {brief(type_name)}")
    payloads = list(payloads)
    if len(payloads) != len(cls.PAYLOADS):
        raise ProtocolError("malformed", f"{cls.TYPE} carries {len(cls.PAYLOADS)} payload frame(s), got {len(payloads)}")
    kwargs: dict[str, Any] = {}
    for name, (annotation, required) in _FIELD_CHECKS[cls].items():
        if name not in header:
            if required:
                raise ProtocolError("malformed", f"{cls.TYPE}.{name} is missing")
            continue
        value = header[name]
        if not _matches(value, annotation):
            raise ProtocolError("malformed", f"{cls.TYPE}.{name} has type {type(value).__name__}, expected {annotation}")
        kwargs[name] = _as_record(value, annotation)
    for name, payload in zip(cls.PAYLOADS, payloads):
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise ProtocolError("oversized", f"{cls.TYPE}.{name} is {len(payload)} bytes, limit {MAX_PAYLOAD_BYTES}")
        kwargs[name] = payload
    msg = cls(**kwargs)
    msg.validate()
    return msg


def _is_record(cls: Any) -> bool:
    return isinstance(cls, type) and dataclasses.is_dataclass(cls) and hasattr(cls, "from_dict")


def _to_wire(value: Any) -> Any:
    if _is_record(type(value)):
        return value.as_dict()
    if isinstance(value, tuple) and value and _is_record(type(value[0])):
        return tuple(item.as_dict() for item in value)
    return value


def _as_record(value: Any, annotation: Any) -> Any:
    """Maps in a record-typed field (or a ``tuple[Record, ...]``) become those records;
    each record's ``from_dict`` validates its own fields."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        record = next((a for a in typing.get_args(annotation) if _is_record(a)), None)
        return record.from_dict(dict(value)) if record is not None and isinstance(value, dict) else value
    if _is_record(annotation) and isinstance(value, dict):
        return annotation.from_dict(dict(value))
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is tuple and len(args) == 2 and args[1] is Ellipsis and _is_record(args[0]):
        return tuple(args[0].from_dict(dict(item)) for item in value)
    return value


def _matches(value: Any, annotation: Any) -> bool:
    """Shallow structural type check for header fields (msgpack gives tuples, not lists)."""
    if annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if origin is tuple or annotation is tuple:
        if not isinstance(value, (tuple, list)):
            return False
        args = typing.get_args(annotation)
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(item, args[0]) for item in value)
        if args:
            return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args))
        return True
    if origin is dict or annotation is dict or _is_record(annotation):
        return isinstance(value, dict)
    return isinstance(value, annotation)
