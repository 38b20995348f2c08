"""Configuration: ``configs/default.toml`` overlaid by a user file and ``--set`` pairs.

Unknown sections or keys are errors (a typo must not silently do nothing). Actors get
the resolved config from the supervisor as JSON in ``PERSONAS_CONFIG``; no file is
written for it.
"""

from __future__ import annotations

import copy
import json
import os
import tomllib
from pathlib import Path
from typing import Any

from .names import FAULT_KINDS

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
    "persona.id",
})
#: Allowed values for the enumerated keys.
CHOICES = {
    "controller.mode": ("steady", "low_latency"),
    "controller.first_fragment": ("clause", "sentence"),
    "fault.kind": FAULT_KINDS,
}


def live_changes(config: dict, items: dict) -> dict:
    """Validate ``{"section.key": value}`` against LIVE_KEYS, CHOICES and types; return the
    coerced changes (raises ConfigError)."""
    out = {}
    for dotted, value in items.items():
        if dotted not in LIVE_KEYS:
            raise ConfigError(f"{dotted} cannot change while running (live keys: {', '.join(sorted(LIVE_KEYS))})")
        section, key = dotted.split(".", 1)
        coerced = _coerce(config[section][key], value, dotted)
        if dotted in CHOICES and coerced not in CHOICES[dotted]:
            raise ConfigError(f"{dotted} must be one of {CHOICES[dotted]}")
        out[dotted] = coerced
    return out


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
    if isinstance(default, bool) or isinstance(value, bool):
        if not isinstance(value, bool) or not isinstance(default, bool):
            raise ConfigError(f"{name} must be true or false")
        return value
    if isinstance(default, float) and isinstance(value, int):
        return float(value)
    if type(default) is not type(value):
        raise ConfigError(f"{name} must be {type(default).__name__}, got {type(value).__name__}")
    return value


def to_env(config: dict) -> str:
    return json.dumps(config)


def from_env() -> dict:
    raw = os.environ.get(ENV_VAR)
    if not raw:
        return load_config()
    return json.loads(raw)


def copy_config(config: dict) -> dict:
    return copy.deepcopy(config)
