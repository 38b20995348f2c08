"""Config rules: a bad value is one clear error naming the key and what is allowed, at
start-up (file or --set) and on a live change; voice files only from the voice directories."""

import os
import threading

import pytest

from persona.voice import VoiceSchemaError, load_voice, voice_dirs
from protocol.config import ConfigError, live_changes, load_config


@pytest.mark.parametrize("override, key, allowed", [
    ("media.fps=0", "media.fps", "1 .. 120"),
    ("media.fps=-5", "media.fps", "1 .. 120"),
    ("media.width=3000", "media.width", "32 .. 2048"),
    ("media.width=255", "media.width", "even"),
    ("flow.player_window_frames=0", "flow.player_window_frames", "2 .. 3000"),
    ("controller.ewma_alpha=nan", "controller.ewma_alpha", "0.01 .. 1.0"),
    ("device.dtype='float8'", "device.dtype", "'float16'"),
    ("tts.adapters=['piper', 'festival']", "tts.adapters", "'espeak'"),
    ("supervisor.warm_spares=['gateway']", "supervisor.warm_spares", "'driver'"),
    ("endpoints.ingress='http://x'", "endpoints.ingress", "tcp://HOST:PORT"),
    ("flow.jitter_min_frames=60", "flow.jitter_min_frames", "below flow.player_window_frames"),
])
def test_a_bad_start_up_value_is_one_line_naming_the_key_and_the_rule(override, key, allowed):
    with pytest.raises(ConfigError) as caught:
        load_config(overrides=[override])
    message = str(caught.value)
    assert key in message and allowed in message and "\n" not in message


@pytest.mark.parametrize("change, allowed", [
    ({"controller.comfort_low_ms": -1_000_000}, "0 .. 60000"),
    ({"fault.ms": 2 ** 62}, "0 .. 600000"),
    ({"controller.comfort_low_ms": 7000}, "below controller.comfort_high_ms"),
    ({"fault.kind": "explode"}, "'stall'"),
])
def test_a_live_change_out_of_range_is_refused_before_it_is_applied(change, allowed):
    config = load_config()
    before = repr(config)
    with pytest.raises(ConfigError) as caught:
        live_changes(config, change)
    assert allowed in str(caught.value) and next(iter(change)) in str(caught.value)
    assert repr(config) == before


def test_the_defaults_and_the_shipped_values_pass():
    config = load_config(overrides=["media.width=512", "media.height=512", "fault.ms=2000", "tts.fallback=''"])
    assert live_changes(config, {"controller.comfort_low_ms": 800, "fault.kind": "stall"})["fault.kind"] == "stall"


def test_a_voice_path_outside_the_voice_directories_is_refused_without_being_read(tmp_path):
    secret = tmp_path / "secret.json"
    secret.write_text('{"password": "hunter2", "name": "x"}')
    missing = tmp_path / "missing.json"
    errors = []
    for path in (secret, missing):
        with pytest.raises(VoiceSchemaError) as caught:
            load_voice(str(path), voice_dirs(load_config()))
        errors.append(str(caught.value).replace(path.name, "F"))
    assert errors[0] == errors[1]  # existence does not leak
    assert "password" not in errors[0] and "must lie in" in errors[0]
    with pytest.raises(VoiceSchemaError, match="a name is"):
        load_voice("../../etc/passwd")


def test_a_fifo_among_the_voices_is_refused_at_once_not_waited_on(tmp_path):
    fifo = tmp_path / "stuck.json"
    os.mkfifo(fifo)
    config = load_config(overrides=[f"voice.dirs=['{tmp_path}']"])
    outcome = []
    worker = threading.Thread(target=lambda: outcome.append(_refusal(str(fifo), config)), daemon=True)
    worker.start()
    worker.join(5.0)
    assert outcome and "regular file" in outcome[0]
    assert "regular file" in _refusal("stuck", config)  # by name too


def test_a_voice_in_an_operator_directory_is_found_by_name(tmp_path):
    (tmp_path / "calm.json").write_text('{"name": "calm", "pace": 0.9}')
    config = load_config(overrides=[f"voice.dirs=['{tmp_path}']"])
    assert load_voice("calm", voice_dirs(config)).pace == 0.9
    assert load_voice(str(tmp_path / "calm.json"), voice_dirs(config)).name == "calm"
    assert load_voice("joe", voice_dirs(config)).name  # the shipped ones still come first
    (tmp_path / "bad.json").write_text('{"pace": "fast"}')
    assert "pace" in _refusal("bad", config)


def _refusal(ref: str, config: dict) -> str:
    try:
        load_voice(ref, voice_dirs(config))
    except VoiceSchemaError as exc:
        return str(exc)
    return ""
