"""Train and evaluate the audio-to-viseme network the driver's lips use when an engine gives
no phoneme timing (``actors.lips``).

Data is made here: Piper's joe voice and espeak-ng (male and neutral variants) speak a
generated corpus with their phoneme alignments; each 10 ms hop is labelled with the viseme
class of the phoneme under its centre (the same classes the renderer shapes the mouth
from). Audio is augmented (gain, noise, resampling to another rate, speed). The network
(``actors.lips.LAYERS``) is trained with a fixed seed on a fixed number of threads, so a
run reproduces the shipped weights on the same machine type.

Evaluation is on unseen sentences (the scenes' prose) in the training voices and on an
unseen voice (espeak-ng's female variant, higher pitch): hop accuracy, and the correlation
and lag of the mouth opening (the renderer's jaw after coarticulation) from predicted
visemes against the one from the engine's alignment; the same figures for the espeak-ng
*shadow alignment* (today's way for engines without timing) are the same-run baseline.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from actors.adapters.espeak import EspeakAdapter
from actors.adapters.wyoming import shadow_alignment
from actors.lips import (CHANNELS, HOP_S, LAYERS, LOOKAHEAD_MS, N_CLASSES, N_MELS, WEIGHTS, AudioLips, hop_count,
                         hop_labels, log_mel)
from actors.render.motion import coarticulate, viseme_targets
from persona.voice import VoiceSchema

from .corpus import held_out_sentences, training_sentences

SEED = 1234
THREADS = 2
UNSEEN_VOICE = VoiceSchema(name="unseen-female", timbre={"gender": "female", "pitch_semitones": 4.0}, pace=1.05)
TRAINING_RATES = (16000, 22050, 24000, 44100)


@dataclass
class Utterance:
    text: str
    voice: str
    pcm: np.ndarray  # int16
    sample_rate: int
    phonemes: list[tuple[str, int, int]]


@dataclass
class Settings:
    sentences: int = 240  # per engine
    steps: int = 1000
    batch: int = 24
    crop_hops: int = 300
    augmented_copies: int = 2
    learning_rate: float = 3e-3
    held_out: int = 24


QUICK = Settings(sentences=8, steps=20, batch=8, crop_hops=200, augmented_copies=1, held_out=3)


def piper_adapter(threads: int = THREADS):
    from actors.adapters.piper import PiperAdapter
    from protocol.config import load_config

    config = load_config()
    config["voice"]["threads"] = threads  # the audio's last bits depend on it: fixed, not the operator's setting
    adapter = PiperAdapter(config)
    adapter.load()
    return adapter


def training_voices(rng: np.random.Generator, engine: str) -> VoiceSchema:
    pace = float(rng.uniform(0.85, 1.15))
    if engine == "piper":
        return VoiceSchema(name="joe", pace=pace, prosody={"variability": float(rng.choice([0.0, 0.5, 1.0]))})
    gender = str(rng.choice(["male", ""]))
    return VoiceSchema(name="espeak", pace=pace, timbre={"gender": gender, "pitch_semitones": float(rng.uniform(-3, 2))})


def speak(texts: list[str], seed: int, echo: Callable[[str], None], voice: VoiceSchema | None = None,
          engines: tuple[str, ...] = ("piper", "espeak")) -> list[Utterance]:
    """Every text in every engine, each with its own (seeded) voice variant unless ``voice`` is given."""
    rng = np.random.default_rng(seed)
    out = []
    for engine in engines:
        adapter = piper_adapter() if engine == "piper" else EspeakAdapter({})
        if engine != "piper":
            adapter.load()
        started = time.perf_counter()
        for text in texts:
            v = voice or training_voices(rng, engine)
            syn = adapter.synthesize(text, v)
            out.append(Utterance(text, f"{engine}:{v.name}", syn.pcm, syn.sample_rate, list(syn.phonemes)))
        echo(f"  {engine}: {len(texts)} sentences, {sum(len(u.pcm) / u.sample_rate for u in out[-len(texts):]):.0f} s "
             f"of audio in {time.perf_counter() - started:.0f} s")
    return out


# -- augmentation ---------------------------------------------------------------------------
def augment(u: Utterance, rng: np.random.Generator) -> Utterance:
    """Speed, resampling to another rate, gain and noise; phoneme times follow the audio."""
    from scipy.signal import resample_poly

    x = u.pcm.astype(np.float64)
    speed = int(rng.integers(90, 111))  # the audio plays 100/speed as long
    rate = int(rng.choice(TRAINING_RATES))
    up, down = 100 * rate, speed * u.sample_rate
    g = np.gcd(up, down)
    x = resample_poly(x, up // g, down // g)
    scale = (up / down)
    phonemes = [(s, int(round(a * scale)), max(1, int(round(n * scale)))) for s, a, n in u.phonemes]
    x *= 10 ** (rng.uniform(-18, 6) / 20)
    signal_power = np.mean(x ** 2) + 1e-9
    noise = rng.standard_normal(len(x))
    if rng.random() < 0.5:  # brown-ish noise: hum and room rumble rather than hiss
        noise = np.cumsum(noise)
        noise -= np.convolve(noise, np.ones(101) / 101, mode="same")
    noise *= np.sqrt(signal_power / (np.mean(noise ** 2) + 1e-9) / 10 ** (rng.uniform(15, 45) / 10))
    pcm = np.clip(np.rint(x + noise), -32768, 32767).astype(np.int16)
    return Utterance(u.text, u.voice, pcm, rate, phonemes)


def examples(utterances: list[Utterance]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(features, labels) per utterance."""
    return [(log_mel(u.pcm, u.sample_rate), hop_labels(u.phonemes, len(u.pcm), u.sample_rate)) for u in utterances]


# -- the network, in torch, mirroring actors.lips ---------------------------------------------
def build_network():
    import torch

    class VisemeNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            sizes = [N_MELS] + [CHANNELS] * len(LAYERS)
            self.convs = torch.nn.ModuleList(torch.nn.Conv1d(sizes[i], sizes[i + 1], k, dilation=d)
                                             for i, (k, d, _) in enumerate(LAYERS))
            self.out = torch.nn.Conv1d(CHANNELS, N_CLASSES, 1)

        def forward(self, x):  # (B, N_MELS, T), normalised
            for i, (conv, (k, d, ahead)) in enumerate(zip(self.convs, LAYERS)):
                span = (k - 1) * d
                y = torch.relu(conv(torch.nn.functional.pad(x, (span - ahead, ahead))))
                x = y if i == 0 else x + y
            return self.out(x)

    return VisemeNet()


def export(net, mean: np.ndarray, std: np.ndarray) -> dict[str, np.ndarray]:
    arrays = {"feature_mean": mean.astype(np.float32), "feature_std": std.astype(np.float32),
              "out.weight": net.out.weight.detach().numpy()[:, :, 0].copy(), "out.bias": net.out.bias.detach().numpy().copy()}
    for i, conv in enumerate(net.convs):
        arrays[f"conv{i}.weight"] = conv.weight.detach().numpy().copy()
        arrays[f"conv{i}.bias"] = conv.bias.detach().numpy().copy()
    return arrays


def train(data: list[tuple[np.ndarray, np.ndarray]], settings: Settings, echo: Callable[[str], None]) -> dict:
    import torch

    torch.manual_seed(SEED)
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(SEED)
    stacked = np.concatenate([f for f, _ in data])
    mean, std = stacked.mean(axis=0), stacked.std(axis=0) + 1e-3
    counts = np.bincount(np.concatenate([y for _, y in data]), minlength=N_CLASSES).astype(np.float64)
    # Rare visemes weigh more (square-root balancing): a mouth that only ever says "schwa" is useless.
    weights = torch.tensor(np.sqrt(counts.sum() / np.maximum(counts, 1.0) / N_CLASSES), dtype=torch.float32)
    net = build_network()
    optimiser = torch.optim.Adam(net.parameters(), lr=settings.learning_rate)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, settings.learning_rate, total_steps=settings.steps)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weights, ignore_index=-1)
    started = time.perf_counter()
    for step in range(settings.steps):
        x, y = batch(data, settings, rng, mean, std)
        loss = loss_fn(net(torch.from_numpy(x)), torch.from_numpy(y))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        if step % max(1, settings.steps // 10) == 0 or step == settings.steps - 1:
            echo(f"  step {step + 1}/{settings.steps}: loss {loss.item():.3f} ({time.perf_counter() - started:.0f} s)")
    return export(net, mean, std)


def batch(data, settings: Settings, rng: np.random.Generator, mean, std) -> tuple[np.ndarray, np.ndarray]:
    x = np.zeros((settings.batch, N_MELS, settings.crop_hops), np.float32)
    y = np.full((settings.batch, settings.crop_hops), -1, np.int64)
    for b in range(settings.batch):
        features, labels = data[int(rng.integers(len(data)))]
        start = int(rng.integers(max(1, len(labels) - settings.crop_hops + 1)))
        f, l = features[start:start + settings.crop_hops], labels[start:start + settings.crop_hops]
        x[b, :, :len(l)] = ((f - mean) / std).T
        x[b, :, len(l):] = ((np.log(1e-6) - mean) / std)[:, None]  # silence past the end
        y[b, :len(l)] = l
    return x, y


# -- evaluation -------------------------------------------------------------------------------
def mouth_opening(phonemes: list[tuple[str, int, int]], n_samples: int, sample_rate: int) -> np.ndarray:
    """The renderer's jaw opening at every hop centre, from aligned (or predicted) visemes."""
    times = (np.arange(hop_count(n_samples, sample_rate)) + 0.5) * sample_rate * HOP_S
    sigma = 35.0 * sample_rate / 1000.0  # the driver's default coarticulation
    return coarticulate(times, viseme_targets(phonemes), sigma)[:, 0]


def correlation_and_lag(predicted: np.ndarray, truth: np.ndarray, max_lag_hops: int = 15) -> tuple[float, int]:
    """Pearson r at zero lag, and the lag (hops, + = predicted late) that maximises it."""
    def r_at(lag: int) -> float:
        a, b = (predicted[lag:], truth[:len(truth) - lag]) if lag >= 0 else (predicted[:lag], truth[-lag:])
        return float(np.corrcoef(a, b)[0, 1]) if len(a) > 2 and a.std() > 0 and b.std() > 0 else 0.0
    best = max(range(-max_lag_hops, max_lag_hops + 1), key=r_at)
    return r_at(0), best


def evaluate(model: AudioLips, utterances: list[Utterance]) -> dict:
    """Pooled figures over utterances: the model and, as the baseline, the shadow alignment."""
    truth, predicted, shadow, hits, total = [], [], [], 0, 0
    for u in utterances:
        labels = hop_labels(u.phonemes, len(u.pcm), u.sample_rate)
        classes = model.classes(u.pcm, u.sample_rate)
        hits, total = hits + int((classes == labels).sum()), total + len(labels)
        truth.append(mouth_opening(u.phonemes, len(u.pcm), u.sample_rate))
        predicted.append(mouth_opening(model.visemes(u.pcm, u.sample_rate), len(u.pcm), u.sample_rate))
        shadow.append(mouth_opening(shadow_alignment(u.text, u.pcm, u.sample_rate)[0], len(u.pcm), u.sample_rate))
    truth_all = np.concatenate(truth)
    figures = {}
    for name, series in (("model", predicted), ("shadow_alignment", shadow)):
        r, lag = correlation_and_lag(np.concatenate(series), truth_all)
        figures[name] = {"mouth_opening_r": round(r, 3), "best_lag_ms": lag * HOP_S * 1000}
    figures["model"]["hop_accuracy"] = round(hits / max(total, 1), 3)
    figures["utterances"] = len(utterances)
    figures["seconds"] = round(sum(len(u.pcm) / u.sample_rate for u in utterances), 1)
    return figures


def held_out_sets(settings: Settings, echo: Callable[[str], None]) -> dict[str, list[Utterance]]:
    texts = held_out_sentences(settings.held_out)
    return {"unseen_sentences": speak(texts, SEED + 1, echo),
            "unseen_voice": speak(texts, SEED + 2, echo, voice=UNSEEN_VOICE, engines=("espeak",))}


def run_training(settings: Settings = Settings(), out: Path = WEIGHTS, echo: Callable[[str], None] = print) -> dict:
    """Make the data, train, save the weights and the model card; returns the card's figures."""
    started = time.perf_counter()
    echo(f"speaking {settings.sentences} generated sentences per engine")
    clean = speak(training_sentences(settings.sentences, SEED), SEED, echo)
    rng = np.random.default_rng(SEED)
    utterances = clean + [augment(u, rng) for _ in range(settings.augmented_copies) for u in clean]
    data = examples(utterances)
    echo(f"training on {sum(len(y) for _, y in data)} hops ({len(utterances)} utterances, "
         f"{settings.augmented_copies} augmented copies each)")
    arrays = train(data, settings, echo)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, **arrays)
    model = AudioLips(arrays, str(out))
    echo("evaluating on held-out sentences and an unseen voice")
    figures = {name: evaluate(model, utts) for name, utts in held_out_sets(settings, echo).items()}
    card = {"weights": out.name, "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
            "parameters": int(sum(a.size for k, a in arrays.items() if not k.startswith("feature"))),
            "lookahead_ms": LOOKAHEAD_MS, "seed": SEED, "threads": THREADS, "settings": vars(settings),
            "training_hops": int(sum(len(y) for _, y in data)), "evaluation": figures,
            "train_seconds": round(time.perf_counter() - started, 1)}
    out.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    return card
