"""persona.voice_embedding on real speech made offline: espeak-ng through the project's
adapter (joe, and a female variant of the same schema), and Piper's joe for a neural voice.

The model tests need resemblyzer's pretrained.pt (pip install --no-deps resemblyzer); the
fallback tests run everywhere."""

import io
import sys

import numpy as np
import pytest
import soundfile
from scipy.signal import lfilter

from actors.adapters import make_adapter
from persona import voice_embedding as ve
from persona.voice import VoiceSchema, load_voice
from protocol.config import load_config

SENTENCES = (
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Please remember to bring your umbrella, it might rain later this afternoon.",
    "Seven scientists studied the ancient map for nearly three hours.",
)
needs_weights = pytest.mark.skipif(ve.weights_path() is None,
                                   reason="resemblyzer's pretrained.pt absent: pip install --no-deps resemblyzer")


def _render(adapter, voice) -> list[tuple[np.ndarray, int]]:
    return [(s.pcm, s.sample_rate) for s in (adapter.synthesize(text, voice) for text in SENTENCES)]


@pytest.fixture(scope="module")
def clips() -> dict:
    """{voice: [(int16 pcm, rate)] for each sentence}: two espeak voices that differ in gender."""
    espeak = make_adapter("espeak", load_config())
    espeak.load()
    joe = load_voice("joe")
    female = VoiceSchema(name="joe-female", timbre={**joe.timbre, "gender": "female"}, accent=joe.accent)
    return {"joe": _render(espeak, joe), "female": _render(espeak, female)}


def _separation(embed, clips) -> tuple[float, float]:
    """(lowest same-voice cosine across sentences, highest cross-voice cosine on one sentence)."""
    vectors = {name: [embed(*clip) for clip in rendered] for name, rendered in clips.items()}
    same = [ve.cosine(v[i], v[j]) for v in vectors.values() for i in range(3) for j in range(i + 1, 3)]
    cross = [ve.cosine(vectors["joe"][i], vectors["female"][i]) for i in range(3)]
    return min(same), max(cross)


def _synthetic_vowel() -> np.ndarray:
    """2.5 s of 16 kHz: a pulse train at a gliding pitch through three formant resonators."""
    rate, rng = ve.SAMPLE_RATE, np.random.default_rng(7)
    t = np.arange(int(2.5 * rate)) / rate
    phase = np.cumsum(110 + 20 * np.sin(2 * np.pi * 0.7 * t)) / rate
    out = (np.diff(np.floor(phase), prepend=0) > 0).astype(float) + 0.01 * rng.standard_normal(len(t))
    for freq, bandwidth in ((700, 110), (1200, 120), (2600, 160)):
        r = np.exp(-np.pi * bandwidth / rate)
        out = lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * freq / rate), r * r], out)
    return (0.05 * out / np.abs(out).max()).astype(np.float32)


# -- the model --------------------------------------------------------------------------------

@needs_weights
def test_model_separates_voices(clips):
    same, cross = _separation(lambda pcm, rate: ve.voice_embedding(pcm, rate)[0], clips)
    # Measured: same voice >= 0.92, the other voice on the same sentence <= 0.70.
    assert same > 0.85 and cross < 0.78 and same - cross > 0.15, (same, cross)


@needs_weights
def test_model_tells_a_neural_voice_from_espeak(clips):
    piper = make_adapter("piper", load_config())
    piper.load()
    rendered = _render(piper, load_voice("joe"))[:2]
    neural, name = ve.voice_embedding(*rendered[0])
    again, _ = ve.voice_embedding(*rendered[1])
    formant, _ = ve.voice_embedding(*clips["joe"][0])
    # Measured: Piper's joe with itself 0.93, with espeak's joe 0.55.
    assert name == ve.RESEMBLYZER_MODEL and neural.shape == (256,)
    assert ve.cosine(neural, again) > ve.cosine(neural, formant) + 0.2


@needs_weights
def test_model_matches_resemblyzer_without_importing_it():
    # Values from resemblyzer 0.1.4's own VoiceEncoder.embed_utterance (with librosa 0.11) on
    # this signal; they pin the network, its gate order and the mel front end.
    vector = ve.embed_preprocessed(_synthetic_vowel())
    top = {24: 0.31611, 168: 0.24421, 126: 0.23943, 224: 0.22973, 122: 0.21274, 237: 0.19501}
    assert np.allclose(vector[list(top)], list(top.values()), atol=2e-3)
    assert np.all(vector[:4] == 0.0)  # the ReLU zeroes these
    assert abs(np.linalg.norm(vector) - 1.0) < 1e-5 and vector.dtype == np.float32
    assert "resemblyzer" not in sys.modules  # it would need webrtcvad and librosa


@needs_weights
def test_model_is_deterministic(clips):
    pcm, rate = clips["joe"][0]
    first, second = ve.voice_embedding(pcm, rate)[0], ve.voice_embedding(pcm.copy(), rate)[0]
    assert np.array_equal(first, second)


@needs_weights
def test_dtype_and_channels_do_not_change_the_voice(clips):
    pcm, rate = clips["joe"][1]
    reference = ve.voice_embedding(pcm, rate)[0]
    as_float = ve.voice_embedding(pcm.astype(np.float32) / 32768, rate)[0]
    stereo = ve.voice_embedding(np.stack([pcm, pcm], axis=1), rate)[0]
    assert ve.cosine(reference, as_float) > 0.999 and ve.cosine(reference, stereo) > 0.999


# -- the fallback -----------------------------------------------------------------------------

def test_fallback_separates_voices(clips):
    same, cross = _separation(ve.mfcc_embedding, clips)
    # Measured: same voice >= 0.97, the other voice on the same sentence <= 0.76.
    assert same > 0.93 and cross < 0.88 and same - cross > 0.1, (same, cross)


def test_fallback_is_used_when_the_weights_are_absent(clips, monkeypatch):
    monkeypatch.setattr(ve, "weights_path", lambda: None)
    monkeypatch.setattr(ve, "_encoder_cache", {})
    vector, name = ve.voice_embedding(*clips["joe"][0])
    assert name == ve.MFCC_MODEL == "mfcc-stats-40"
    assert vector.shape == (40,) and vector.dtype == np.float32
    assert abs(np.linalg.norm(vector) - 1.0) < 1e-5
    assert np.array_equal(vector, ve.mfcc_embedding(*clips["joe"][0]))
    with pytest.raises(RuntimeError, match="pretrained.pt"):
        ve.resemblyzer_embedding(*clips["joe"][0])


def test_mel_filterbank_is_librosas_slaney():
    # librosa.filters.mel(sr=16000, n_fft=400, n_mels=40), librosa 0.11 (htk=False, norm="slaney").
    bank = ve.mel_filterbank()
    assert bank.shape == (40, 201)
    assert bank.sum() == pytest.approx(0.9994971752166748, rel=1e-6)
    assert bank.max() == pytest.approx(0.013329954817891121, rel=1e-6)
    assert bank.argmax(axis=1)[[0, 9, 19, 29, 39]].tolist() == [2, 18, 41, 87, 185]
    assert np.allclose(bank[5][bank[5] > 0], [0.005939744878560305, 0.013329954817891121, 0.006464776117354631])


def test_mel_frames_are_centred_every_10_ms():
    mel = ve.mel_spectrogram(_synthetic_vowel())
    assert mel.shape == (1 + 40000 // ve.HOP, 40) and mel.dtype == np.float32


# -- files, cosine and bad input --------------------------------------------------------------

def _wav_bytes(pcm: np.ndarray, rate: int) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, pcm, rate, format="WAV")
    return buffer.getvalue()


def test_embed_files_takes_paths_and_bytes(clips, tmp_path):
    path = tmp_path / "joe.wav"
    path.write_bytes(_wav_bytes(*clips["joe"][0]))
    vector, name = ve.embed_files([path, _wav_bytes(*clips["joe"][1])])
    single, single_name = ve.voice_embedding(*clips["joe"][2])
    assert name == single_name and vector.shape == single.shape
    assert abs(np.linalg.norm(vector) - 1.0) < 1e-5
    with pytest.raises(ValueError, match="not readable"):
        ve.embed_files([b"RIFF nonsense"])
    with pytest.raises(ValueError, match="no voice"):
        ve.embed_files([])


def test_cosine_refuses_vectors_of_different_models():
    assert ve.cosine(np.ones(3), np.ones(3)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="different models"):
        ve.cosine(np.ones(256), np.ones(40))
    with pytest.raises(ValueError, match="zero"):
        ve.cosine(np.zeros(40), np.ones(40))


RATE = 22050
SPEECHLESS = np.zeros(2 * RATE, np.int16)
SPEECHLESS_BLIP = SPEECHLESS.copy()
SPEECHLESS_BLIP[RATE:RATE + 2000] = 8000  # 0.09 s of sound in 2 s of silence


@pytest.mark.parametrize("pcm, rate, message", [
    (np.zeros(0, np.int16), RATE, "empty"),
    (np.full(RATE, np.nan, np.float32), RATE, "NaN"),
    (np.ones(RATE, np.uint8), RATE, "int16, int32, float32 or float64"),
    (np.ones(RATE, np.int64), RATE, "int16, int32, float32 or float64"),
    ([0.1] * RATE, RATE, "numpy array"),
    (np.ones((2, 2, RATE), np.float32), RATE, "1-D"),
    (np.ones(RATE // 5, np.float32), RATE, "at least 0.5 s"),
    (SPEECHLESS, RATE, "silence"),
    (SPEECHLESS_BLIP, RATE, "s of speech"),
    (np.ones(RATE, np.float32), 0, "below 8000"),
    (np.ones(RATE, np.float32), 22050.0, "integer"),
])
@pytest.mark.parametrize("embed", [ve.voice_embedding, ve.mfcc_embedding], ids=["auto", "fallback"])
def test_bad_input_raises_value_error(embed, pcm, rate, message):
    with pytest.raises(ValueError, match=message):
        embed(pcm, rate)
