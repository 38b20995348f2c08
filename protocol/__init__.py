"""The system's vocabulary and its bottom layer: one module per message family, explicit
limits, the shared names (``names``), the configuration (``config``) and the control
endpoint's wire with its clients (``control_endpoint``). Every other package may import
this one; it imports none of them.

Importing this package registers every family with the envelope decoder.
"""

from .audio import AudioChunk
from .control import BargeIn, ConfigUpdate, EpochRequest, Shutdown, TakeOver
from .envelope import Message, ProtocolError, decode, encode, known_types
from .flow import Credit
from .ingress import IngressBargeIn, IngressEnd, IngressToken, parse_ingress, tokenize_like_llm
from .lifecycle import Describe, EpochAck, Heartbeat, Info, Ready
from .media import AudioSpan, AVPacket, ChunkStart, frame_samples, frame_start_sample
from .provenance import Provenance
from .recovery import Heard, Journal, Recovery, RecoveryAck, Restore, RestoreRequest, ResumePoint
from .text import TextChunk, VisualMarker
from .timeline import TimelineEvent

__all__ = [
    "AudioChunk", "AudioSpan", "AVPacket", "BargeIn", "ChunkStart", "ConfigUpdate", "Credit", "Describe", "EpochAck",
    "EpochRequest", "Heard", "Heartbeat", "Info", "IngressBargeIn", "IngressEnd", "IngressToken", "Journal", "Message",
    "ProtocolError", "Provenance", "Ready", "Recovery", "RecoveryAck", "Restore", "RestoreRequest", "ResumePoint",
    "Shutdown", "TakeOver", "TextChunk", "TimelineEvent", "VisualMarker", "decode", "encode", "frame_samples",
    "frame_start_sample", "known_types", "parse_ingress", "tokenize_like_llm",
]
