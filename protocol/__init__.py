"""The system's vocabulary: one module per message family, explicit limits.

Importing this package registers every family with the envelope decoder.
"""

from .audio import AudioChunk
from .control import BargeIn, ConfigUpdate, EpochRequest, Shutdown
from .envelope import Message, ProtocolError, decode, encode, known_types
from .flow import Credit
from .ingress import IngressBargeIn, IngressEnd, IngressToken, parse_ingress
from .lifecycle import Describe, Heartbeat, Info, Ready
from .media import AudioSpan, AVPacket, frame_start_sample
from .text import TextChunk, VisualMarker
from .timeline import TimelineEvent

__all__ = [
    "AudioChunk", "AudioSpan", "AVPacket", "BargeIn", "ConfigUpdate", "Credit", "Describe", "EpochRequest", "Heartbeat", "Info",
    "IngressBargeIn", "IngressEnd", "IngressToken", "Message", "ProtocolError", "Ready", "Shutdown",
    "TextChunk", "TimelineEvent", "VisualMarker", "decode", "encode", "frame_start_sample",
    "known_types", "parse_ingress",
]
