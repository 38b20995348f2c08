"""Configuration: ``configs/default.toml`` overlaid by a user file and ``--set`` pairs.

Unknown sections or keys are errors (a typo must not silently do nothing). Actors get
the resolved config from the supervisor as JSON in ``PERSONAS_CONFIG``; no file is
written for it.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import tomllib
from pathlib import Path
from typing import Any

from .names import ACTOR_NAMES, ADAPTER_NAMES, ENDPOINT_NAMES, FAULT_KINDS, GATEWAY_SPEECH_ADAPTERS, LIP_SOURCES

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "configs" / "default.toml"
ENV_VAR = "PERSONAS_CONFIG"


class ConfigError(ValueError):
    pass


#: Keys that may change while the system runs (`personas-supervisor config set`); each is
#: applied by its actor at the next safe boundary. Everything else needs a restart.
LIVE_KEYS = frozenset({
    "tts.adapter", "tts.fallback", "voice.persona",
    "controller.enabled", "controller.mode", "controller.first_fragment", "controller.min_first_words",
    "controller.comfort_low_ms", "controller.comfort_high_ms",
    "fault.adapter", "fault.kind", "fault.ms",
    "persona.id", "driver.lips",
})
#: Allowed values for the enumerated keys (for a list, of each of its items).
CHOICES = {
    "controller.mode": ("steady", "low_latency"),
    "controller.first_fragment": ("clause", "sentence"),
    "fault.kind": FAULT_KINDS,
    "fault.adapter": ADAPTER_NAMES,
    "tts.adapters": ADAPTER_NAMES,
    "device.preference": ("mps", "cuda", "cpu"),
    "device.dtype": ("auto", "float16", "float32"),
    "persona.mode": ("close_up", "medium"),
    "driver.lips": LIP_SOURCES,
    "supervisor.warm_spares": ACTOR_NAMES,
    "sessions.warm_spares": ACTOR_NAMES,
    "openai_speech.response_format": ("pcm", "wav"),
    "web.speech_adapter": ("", *GATEWAY_SPEECH_ADAPTERS),
}
#: Inclusive ranges of the numeric keys. The bounds are what the system can honour on one
#: machine (a 3000-pixel frame or a 0 fps clock is a mistake, not a wish); every number is
#: also finite.
RANGES = {
    "media.fps": (1, 120), "media.sample_rate": (8000, 48000), "media.width": (32, 2048), "media.height": (32, 2048),
    "device.threads": (1, 256), "voice.threads": (1, 256),
    "tts.wyoming_timeout_s": (0.1, 600), "tts.stall_factor": (1.0, 100), "tts.min_deadline_ms": (0, 600_000),
    "controller.min_first_words": (1, 100), "controller.comfort_low_ms": (0, 60_000),
    "controller.comfort_high_ms": (0, 60_000), "controller.ewma_alpha": (0.01, 1.0), "controller.max_hold_ms": (0, 10_000),
    "fault.ms": (0, 600_000),
    "persona.dissolve_frames": (0, 250), "persona.drift_sample_s": (0, 3600), "persona.drift_reset": (0, 4),
    "registry.port": (0, 65535), "registry.max_upload_mb": (1, 16_384), "registry.max_file_mb": (1, 4096),
    "registry.signed_url_ttl_s": (1, 7 * 86400), "registry.max_jobs": (1, 64), "registry.job_queue": (0, 10_000),
    "registry.client_timeout_s": (0.1, 3600),
    "parser.max_chunk_chars": (20, 1900), "parser.max_buffered_chunks": (1, 4096),
    "flow.tts_window_chunks": (1, 256), "flow.stitcher_window_ms": (100, 120_000),
    "flow.driver_window_frames": (1, 1000), "flow.player_window_frames": (2, 3000), "flow.jitter_min_frames": (0, 3000),
    "flow.idle_lead_frames": (0, 250), "flow.gap_lead_frames": (0, 250), "flow.stitch_overlap_ms": (0, 100),
    "flow.max_render_batch": (1, 64),
    "driver.marker_ease_frames": (0, 250), "driver.coarticulation_ms": (0, 500), "driver.degrade_min_side": (0, 2048),
    "player.realtime_priority": (0, 99), "player.niceness": (-20, 19),
    "web.port": (0, 65535), "web.jpeg_quality": (1, 100), "web.client_lag_frames": (1, 3000),
    "web.client_drop_frames": (1, 10_000), "web.say_rate": (0.1, 100_000), "web.speech_workers": (1, 4),
    "openai_speech.sample_rate": (8000, 192_000), "openai_speech.timeout_s": (0.1, 600),
    "openai_speech.max_audio_s": (1, 600),
    "supervisor.heartbeat_s": (0.05, 60), "supervisor.liveness": (1, 100), "supervisor.max_restarts": (0, 10_000),
    "supervisor.restart_window_s": (1, 86400), "supervisor.ready_timeout_s": (1, 3600),
    "supervisor.stop_timeout_s": (0.1, 600), "supervisor.linger_ms": (0, 60_000), "supervisor.stuck_after_s": (1, 3600),
    "sessions.port": (0, 65535), "sessions.idle_timeout_s": (1, 7 * 86400), "sessions.start_timeout_s": (1, 3600),
    "sessions.max_sessions": (0, 10_000), "sessions.cpu_per_session": (0, 1024), "sessions.cpu_budget": (0, 4096),
    "sessions.memory_budget_mb": (0, 16_777_216), "sessions.retry_after_s": (1, 3600),
    "sessions.ray_cpus_per_session": (0.01, 1024),
}
#: Keys that must hold in relation to each other: (smaller, larger) - the first below the second.
ORDERED = (("controller.comfort_low_ms", "controller.comfort_high_ms"),
           ("flow.jitter_min_frames", "flow.player_window_frames"),
           ("web.client_lag_frames", "web.client_drop_frames"))
#: An endpoint is a tcp address with a port, or an ipc path.
ENDPOINT = re.compile(r"(tcp://(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.*-]+):\d{1,5}|ipc://[^\x00]{1,200})")
#: Keys whose value must match a pattern: (pattern, what it is).
PATTERNS = {
    "openai_speech.base_url": (re.compile(r"https?://[^\s/?#@]+(/[^\s?#]*)?"),
                               "an http(s) URL (no user:password@, query or fragment; the key comes from api_key_env)"),
    "openai_speech.api_key_env": (re.compile(r"([A-Za-z_][A-Za-z0-9_]{0,127})?"), "'' or an environment variable's name"),
}


def live_changes(config: dict, items: dict) -> dict:
    """Validate ``{"section.key": value}`` against LIVE_KEYS, CHOICES and types; return the
    coerced changes (raises ConfigError)."""
    out = {}
    for dotted, value in items.items():
        if dotted not in LIVE_KEYS:
            raise ConfigError(f"{dotted} cannot change while running (live keys: {', '.join(sorted(LIVE_KEYS))})")
        section, key = dotted.split(".", 1)
        out[dotted] = _coerce(config[section][key], value, dotted)
    trial = copy_config(config)
    apply_changes(trial, out)
    check_relations(trial)
    return out


def check_value(dotted: str, value: Any) -> None:
    """One key against its rule (choices, range, endpoint form); raises ConfigError with
    the key and what is allowed."""
    if dotted in CHOICES:
        allowed = CHOICES[dotted]
        for item in value if isinstance(value, list) else [value]:
            if item not in allowed:
                raise ConfigError(f"{dotted} = {_brief(item)} is not allowed (one of: {', '.join(map(repr, allowed))})")
    if dotted in RANGES and not isinstance(value, bool) and isinstance(value, (int, float)):
        low, high = RANGES[dotted]
        if not math.isfinite(value) or not low <= value <= high:
            raise ConfigError(f"{dotted} = {_brief(value)} is out of range ({low} .. {high})")
    section, _, key = dotted.partition(".")
    if section == "endpoints" and key in ENDPOINT_NAMES and not ENDPOINT.fullmatch(str(value)):
        raise ConfigError(f"{dotted} = {_brief(value)} is not an endpoint (tcp://HOST:PORT or ipc://PATH)")
    if dotted in PATTERNS and not PATTERNS[dotted][0].fullmatch(str(value)):
        raise ConfigError(f"{dotted} = {_brief(value)} is not {PATTERNS[dotted][1]}")
    if dotted in ("media.width", "media.height") and value % 2:
        raise ConfigError(f"{dotted} = {value} must be even (H.264 halves it for colour)")


def check_relations(config: dict) -> None:
    for small, large in ORDERED:
        a, b = get_key(config, small), get_key(config, large)
        if not a < b:
            raise ConfigError(f"{small} = {a} must be below {large} = {b}")
    tts = config["tts"]
    loaded = ", ".join(tts["adapters"])
    if tts["adapter"] not in tts["adapters"]:
        raise ConfigError(f"tts.adapter = {_brief(tts['adapter'])} must be one of the loaded adapters (tts.adapters: {loaded})")
    if tts["fallback"] not in ("", *tts["adapters"]):
        raise ConfigError(f"tts.fallback = {_brief(tts['fallback'])} must be '' or one of the loaded adapters "
                          f"(tts.adapters: {loaded})")


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def apply_changes(config: dict, changes: dict) -> None:
    for dotted, value in changes.items():
        section, key = dotted.split(".", 1)
        config[section][key] = value


def get_key(config: dict, dotted: str):
    section, _, key = dotted.partition(".")
    if section not in config or (key and key not in config[section]):
        raise ConfigError(f"unknown key {dotted}")
    return config[section][key] if key else config[section]


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    with open(DEFAULT_CONFIG, "rb") as f:
        config = tomllib.load(f)
    if path:
        with open(path, "rb") as f:
            merge(config, tomllib.load(f), where=str(path))
    for item in overrides:
        apply_override(config, item)
    check_relations(config)
    from .security import SecurityError, check_binds

    try:
        check_binds(config)
    except SecurityError as exc:
        raise ConfigError(str(exc)) from None
    return config


def merge(base: dict, update: dict, where: str = "") -> dict:
    for section, values in update.items():
        if section not in base:
            raise ConfigError(f"{where}: unknown section [{section}]")
        if not isinstance(values, dict):
            raise ConfigError(f"{where}: [{section}] must be a table")
        for key, value in values.items():
            if key not in base[section]:
                raise ConfigError(f"{where}: unknown key {section}.{key}")
            base[section][key] = _coerce(base[section][key], value, f"{section}.{key}")
    return base


def apply_override(config: dict, item: str) -> None:
    """``section.key=value``; the value is parsed as TOML when it can be, else a string."""
    dotted, sep, raw = item.partition("=")
    section, _, key = dotted.strip().partition(".")
    if not sep or not key:
        raise ConfigError(f"override {item!r} is not section.key=value")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    merge(config, {section: {key: value}}, where="--set")


def _coerce(default: Any, value: Any, name: str) -> Any:
    """``value`` in the type of the key's default, then checked against the key's rule."""
    if isinstance(default, bool) or isinstance(value, bool):
        if not isinstance(value, bool) or not isinstance(default, bool):
            raise ConfigError(f"{name} must be true or false")
    elif isinstance(default, float) and isinstance(value, int):
        value = float(value)
    elif type(default) is not type(value):
        raise ConfigError(f"{name} must be {type(default).__name__}, got {type(value).__name__}")
    if isinstance(value, list) and isinstance(default, list) and default \
            and any(type(item) is not type(default[0]) for item in value):
        raise ConfigError(f"{name} must be a list of {type(default[0]).__name__}")
    check_value(name, value)
    return value


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)


def to_toml(sections: dict) -> str:
    """``{section: {key: value}}`` as a TOML config file (the form `up --config` reads)."""
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def to_env(config: dict) -> str:
    return json.dumps(config)


def from_env() -> dict:
    raw = os.environ.get(ENV_VAR)
    if not raw:
        return load_config()
    return json.loads(raw)


def copy_config(config: dict) -> dict:
    return copy.deepcopy(config)
