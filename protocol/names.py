"""Names the whole system shares, defined once: processes, endpoints, credit links, faults.

Everything that spells one of these names imports it from here, so a rename is one edit
and a typo is an import error instead of a silent mismatch.
"""

from __future__ import annotations

#: The five media actors, upstream to downstream. `python -m actors NAME` runs one.
ACTOR_NAMES = ("parser", "tts", "stitcher", "driver", "player")
#: The web gateway's process name (its config section, endpoint and timeline actor).
GATEWAY = "web"
#: Supervised beside the actors but outside the media path (consumers of it).
SERVICE_NAMES = (GATEWAY,)
#: Every process the supervisor may launch.
PROCESS_NAMES = ACTOR_NAMES + SERVICE_NAMES

#: Endpoints users and other programs connect to.
PUBLIC_ENDPOINTS = ("ingress", "timeline", "control", "av_out")
#: Endpoints only the supervisor and the actors use: the proxy, the supervisor's channels
#: (system broadcast, health, the parser's text ledger), and one inbox per process.
INTERNAL_ENDPOINTS = ("timeline_in", "system", "health", "ledger", *PROCESS_NAMES)
#: Every key of the config's ``[endpoints]`` section.
ENDPOINT_NAMES = PUBLIC_ENDPOINTS + INTERNAL_ENDPOINTS


def link_name(producer: str, consumer: str) -> str:
    """The credit link from ``producer`` to ``consumer``, as grants and sends name it."""
    return f"{producer}->{consumer}"


#: The credit links of the media path: the unit each counts in and the ``[flow]`` key of its
#: window (what the consumer grants at the start of every epoch).
CREDIT_LINKS = {
    link_name("parser", "tts"): ("chunks", "tts_window_chunks"),
    link_name("tts", "stitcher"): ("ms", "stitcher_window_ms"),
    link_name("stitcher", "driver"): ("frames", "driver_window_frames"),
    link_name("driver", "player"): ("frames", "player_window_frames"),
}


def credit_unit(producer: str, consumer: str) -> str:
    return CREDIT_LINKS[link_name(producer, consumer)][0]


#: The data message (its TYPE) each credit link carries, by the producer that sends it: a
#: consumer checks that what arrives spent its own, current grant.
LINK_MESSAGES = {"text_chunk": "parser", "audio_chunk": "tts", "audio_span": "stitcher", "av_packet": "driver"}
#: The messages that may arrive from an epoch the receiver has not begun (they can overtake
#: the barge-in broadcast) and so start it: the media path's data, its markers and credit.
EPOCH_CARRIERS = frozenset({*LINK_MESSAGES, "visual_marker", "credit"})

#: The TTS engines an adapter exists for (config ``tts.adapters``).
ADAPTER_NAMES = ("piper", "espeak", "wyoming", "openai_speech")
#: The engines the web gateway may serve ``POST /v1/audio/speech`` with (``web.speech_adapter``):
#: not ``openai_speech``, which could end up asking the gateway itself.
GATEWAY_SPEECH_ADAPTERS = ("piper", "espeak", "wyoming")

#: What the fault injector can make an engine do (config ``fault.kind``).
FAULT_KINDS = ("none", "latency", "stall", "error", "error_once", "slowdown")
#: Where the lips take their timing from (`driver.lips`): actors/lips.py.
LIP_SOURCES = ("auto", "alignment", "audio")


def upstream_of(actor: str) -> str:
    """The media actor that sends to ``actor`` ("" for the parser)."""
    i = ACTOR_NAMES.index(actor)
    return ACTOR_NAMES[i - 1] if i > 0 else ""


def downstream_of(actor: str) -> str:
    """The media actor ``actor`` sends to ("" for the player)."""
    i = ACTOR_NAMES.index(actor)
    return ACTOR_NAMES[i + 1] if i + 1 < len(ACTOR_NAMES) else ""


def recovery_scope(actor: str) -> tuple[str, ...]:
    """Who drops its work in flight when ``actor`` is replaced: everything from the parser
    to it (what it held is lost, so what led to it is sent again). When the player is
    replaced the driver is in it too: the frames it sent died with the player."""
    return ACTOR_NAMES[: ACTOR_NAMES.index(actor) + 1]


def recovery_owner(actor: str) -> str:
    """The surviving actor that says where the timeline continues after ``actor`` is
    replaced: the one just below it (the driver for the player); "" for the parser, whose
    text the supervisor's ledger holds."""
    if actor == ACTOR_NAMES[0]:
        return ""
    return downstream_of(actor) or upstream_of(actor)
