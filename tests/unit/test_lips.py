"""Lips from audio: the features, the network's numpy inference against its torch twin, the
labels and segments, the choice of source by `driver.lips`, and the shipped model on a real
voice it was not trained on."""

from __future__ import annotations

import numpy as np
import pytest

from actors.adapters.base import Synthesis
from actors.lips import (CLASS_SYMBOLS, LOOKAHEAD_MS, AudioLips, LipTiming, hop_labels, log_mel, segments, shipped)
from training.lips import build_network, correlation_and_lag, export, mouth_opening


def chirp(rate: int, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (8000 * np.sin(2 * np.pi * (200 + 1500 * t) * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.int16)


def test_features_are_one_row_per_10ms_hop_and_do_not_depend_on_the_sample_rate():
    from scipy.signal import resample_poly

    a = log_mel(chirp(22050), 22050)
    b = log_mel(resample_poly(chirp(22050).astype(float), 320, 441).astype(np.int16), 16000)
    assert a.shape == (100, 40) and b.shape == (100, 40)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.95


def test_numpy_inference_is_the_torch_network():
    import torch

    torch.manual_seed(3)
    net = build_network()
    features = log_mel(chirp(22050, 2.0), 22050)
    mean, std = features.mean(axis=0), features.std(axis=0) + 1e-3
    model = AudioLips(export(net, mean, std))
    with torch.no_grad():
        expected = net(torch.from_numpy(((features - mean) / std).T[None].astype(np.float32)))[0].numpy().T
    assert np.allclose(model.logits(features), expected, atol=1e-4)


def test_look_ahead_is_bounded():
    """Changing audio more than LOOKAHEAD_MS after a hop's centre leaves that hop's scores alone."""
    model = shipped()
    pcm = chirp(22050, 2.0)
    base = model.logits(log_mel(pcm, 22050))
    hop = 100  # centre at 1005 ms
    changed = pcm.copy()
    cut = int((1.005 + LOOKAHEAD_MS / 1000 + 0.002) * 22050)
    changed[cut:] = 0
    after = model.logits(log_mel(changed, 22050))
    assert np.allclose(base[: hop + 1], after[: hop + 1], atol=1e-4)
    assert not np.allclose(base, after, atol=1e-4)  # the change is seen later


def test_labels_and_segments_round_trip():
    rate = 22050
    phonemes = [("h", 0, 2000), ("ˈ", 2000, 300), ("ɛ", 2300, 4000), ("l", 6300, 2000), ("oʊ"[0], 8300, 5000),
                (" ", 13300, 3000), ("m", 16300, 2500)]
    labels = hop_labels(phonemes, 20000, rate)
    assert labels[int(3000 / 220.5)] == CLASS_SYMBOLS.index("ɛ")  # the stress mark takes the next vowel's class
    assert labels[int(14500 / 220.5)] == 0  # a word break is a resting mouth
    again = hop_labels(segments(labels, rate, 20000), 20000, rate)
    assert (again == labels).all()


def test_the_source_follows_driver_lips():
    config = {"driver": {"lips": "auto"}}
    timing = LipTiming(config)
    pcm = chirp(22050, 1.0)
    aligned = [("a", 0, 10000)]
    engine = timing.apply(Synthesis(pcm, 22050, phonemes=list(aligned), timing="engine"))
    assert engine.phonemes == aligned and engine.timing == "engine"  # an engine's own alignment stays
    shadow = timing.apply(Synthesis(pcm, 22050, phonemes=list(aligned), timing="shadow"))
    assert shadow.timing == "audio" and shadow.phonemes != aligned  # a guess is replaced by what is heard
    config["driver"]["lips"] = "alignment"
    kept = timing.apply(Synthesis(pcm, 22050, phonemes=list(aligned), timing="shadow"))
    assert kept.timing == "shadow" and kept.phonemes == aligned
    config["driver"]["lips"] = "audio"
    assert timing.apply(Synthesis(pcm, 22050, phonemes=list(aligned), timing="engine")).timing == "audio"
    assert timing.apply(Synthesis(np.zeros(0, np.int16), 22050)).timing == "engine"  # nothing to hear


def test_a_damaged_weights_file_is_refused(tmp_path):
    from actors.lips import LipsModelError

    path = tmp_path / "lips.npz"
    np.savez(path, feature_mean=np.zeros(40, np.float32))
    with pytest.raises(LipsModelError, match="lacks"):
        AudioLips.load(path)
    path.write_bytes(b"not a zip")
    with pytest.raises(Exception):
        AudioLips.load(path)
    with pytest.raises(LipsModelError, match="no lip model"):
        AudioLips.load(tmp_path / "missing.npz")


def test_the_shipped_model_follows_a_sentence_it_never_heard():
    """Piper speaks a held-out sentence: the mouth opening from the model's visemes follows the
    one from Piper's own alignment (zero lag) far better than chance."""
    from persona.voice import VoiceSchema
    from training.lips import piper_adapter

    syn = piper_adapter().synthesize("The lighthouse keeper polished the great lens until it shone.", VoiceSchema("joe"))
    truth = mouth_opening(syn.phonemes, len(syn.pcm), syn.sample_rate)
    predicted = mouth_opening(shipped().visemes(syn.pcm, syn.sample_rate), len(syn.pcm), syn.sample_rate)
    r, lag = correlation_and_lag(predicted, truth)
    rng = np.random.default_rng(0)
    shuffled = [np.corrcoef(rng.permutation(predicted), truth)[0, 1] for _ in range(20)]
    print(f"\nmouth opening r = {r:.3f} (lag {lag * 10} ms); shuffled hops: max r = {max(shuffled):.3f}")
    assert r > 0.6 and abs(lag) <= 2
    assert r > max(shuffled) + 0.3
