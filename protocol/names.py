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
#: Endpoints only the supervisor and the actors use: the proxy, the two supervisor channels,
#: and one inbox per process.
INTERNAL_ENDPOINTS = ("timeline_in", "system", "health", *PROCESS_NAMES)
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

#: What the fault injector can make an engine do (config ``fault.kind``).
FAULT_KINDS = ("none", "latency", "stall", "error", "error_once", "slowdown")
