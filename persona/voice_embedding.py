"""A speaker (voice) embedding of a persona's voice reference recordings, fully offline.

The preferred model is Resemblyzer's pretrained GE2E speaker encoder (a 3-layer LSTM over
40-band mel frames, then Linear + ReLU, L2-normalised; 256 dimensions). Its weights ship
inside the PyPI package ``resemblyzer`` as ``pretrained.pt``; the package itself is never
imported (it pulls in webrtcvad and librosa), so the network and its front end are rebuilt
here from the weights file alone: 16 kHz mono, volume raised to -30 dBFS, long silences
trimmed (by energy, standing in for webrtcvad), a power mel spectrogram (n_fft 400, hop 160,
40 Slaney bands, as librosa's defaults), and 1.6 s partial utterances whose embeddings are
averaged, as ``VoiceEncoder.embed_utterance``. Checked against resemblyzer 0.1.4 itself (with
librosa 0.11 and webrtcvad): the filterbank agrees to 1e-9, the same audio gives the same
embedding to 1e-6, and the whole pipeline, energy trimming included, gives cosine >= 0.995.

When the weights file is absent, a signal-processing vector stands in (``mfcc_embedding``):
the mean and standard deviation of 20 MFCCs over the voiced frames of the same front end.
It separates clearly different voices but is far weaker than the model, and the two spaces
are not comparable: every embedding travels with the name of the model that made it, and
``cosine`` refuses vectors of different lengths.

Nothing here downloads anything; the model loads once per process and runs on one CPU thread.
"""

from __future__ import annotations

import importlib.util
import io
import math
import threading
from pathlib import Path

import numpy as np
from scipy.fft import dct

SAMPLE_RATE = 16000
N_FFT = 400  # 25 ms
HOP = 160  # 10 ms
N_MELS = 40
PARTIAL_FRAMES = 160  # 1.6 s per partial utterance
PARTIAL_RATE = 1.3  # partials per second: Resemblyzer's default, a 77-frame step (~52 % overlap)
MIN_COVERAGE = 0.75  # a last partial less covered than this is dropped
TARGET_DBFS = -30.0
VAD_WINDOW = 480  # 30 ms, Resemblyzer's VAD window
VAD_AVERAGE_WIDTH = 8
VAD_MAX_SILENCE = 6  # windows of silence kept between voiced runs
VAD_BELOW_PEAK_DB = 40.0  # a window this far below the loud windows counts as silence
MIN_SECONDS = 0.5  # less speech than this says too little about a voice
MIN_SAMPLE_RATE = 8000
N_MFCC = 20

RESEMBLYZER_MODEL = "resemblyzer-ge2e-256"
MFCC_MODEL = f"mfcc-stats-{2 * N_MFCC}"

_INT_SCALE = {np.dtype(np.int16): 32768.0, np.dtype(np.int32): 2147483648.0}
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_encoder_lock = threading.Lock()
_encoder_cache: dict[str, object] = {}


# -- input ----------------------------------------------------------------------------------

def _as_float_mono(pcm) -> np.ndarray:
    """int16/int32/float PCM, mono or (frames, channels), as float64 mono in [-1, 1]."""
    if not isinstance(pcm, np.ndarray):
        raise ValueError(f"voice audio must be a numpy array, not {type(pcm).__name__}")
    if pcm.dtype not in _INT_SCALE and pcm.dtype not in _FLOATS:
        raise ValueError(f"voice audio must be int16, int32, float32 or float64 PCM, not {pcm.dtype}")
    if pcm.ndim not in (1, 2):
        raise ValueError(f"voice audio must be 1-D or (frames, channels), not shape {pcm.shape}")
    if pcm.size == 0:
        raise ValueError("voice audio is empty")
    wav = pcm.astype(np.float64) / _INT_SCALE.get(pcm.dtype, 1.0)
    wav = wav.mean(axis=1) if wav.ndim == 2 else wav
    if not np.all(np.isfinite(wav)):
        raise ValueError("voice audio contains NaN or infinite samples")
    return wav


def _resample(wav: np.ndarray, sample_rate) -> np.ndarray:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)):
        raise ValueError(f"sample_rate must be an integer, not {sample_rate!r}")
    if sample_rate < MIN_SAMPLE_RATE:
        raise ValueError(f"sample_rate {sample_rate} is below {MIN_SAMPLE_RATE} Hz")
    if len(wav) < MIN_SECONDS * sample_rate:
        raise ValueError(f"voice audio is {len(wav) / sample_rate:.2f} s; at least {MIN_SECONDS} s is needed")
    if sample_rate == SAMPLE_RATE:
        return wav
    from scipy.signal import resample_poly  # 0.6 s to import: only when a rate needs changing

    g = math.gcd(int(sample_rate), SAMPLE_RATE)
    return resample_poly(wav, SAMPLE_RATE // g, int(sample_rate) // g)


def _normalize_volume(wav: np.ndarray) -> np.ndarray:
    """Raise (never lower) the level to -30 dBFS: the encoder reads raw, not log, mel power."""
    rms = float(np.sqrt(np.mean(wav ** 2)))
    if rms == 0.0:
        raise ValueError("voice audio is digital silence")
    change_db = TARGET_DBFS - 20.0 * math.log10(rms)
    return wav * 10.0 ** (change_db / 20.0) if change_db > 0 else wav


def _moving_average(flags: np.ndarray, width: int) -> np.ndarray:
    padded = np.concatenate((np.zeros((width - 1) // 2), flags, np.zeros(width // 2)))
    sums = np.cumsum(padded, dtype=float)
    sums[width:] = sums[width:] - sums[:-width]
    return sums[width - 1:] / width


def _trim_long_silences(wav: np.ndarray) -> np.ndarray:
    """Resemblyzer's trim_long_silences with an energy detector in place of webrtcvad.

    A 30 ms window is voiced when its energy is within 40 dB of the loud windows (the 95th
    percentile, so one click does not set the bar); then the same smoothing and dilation.
    """
    wav = wav[:len(wav) - len(wav) % VAD_WINDOW]
    windows = wav.reshape(-1, VAD_WINDOW)
    energy_db = 10.0 * np.log10(np.mean(windows ** 2, axis=1) + 1e-12)
    voiced = energy_db > np.percentile(energy_db, 95) - VAD_BELOW_PEAK_DB
    mask = np.round(_moving_average(voiced.astype(float), VAD_AVERAGE_WIDTH)).astype(bool)
    half = VAD_MAX_SILENCE // 2  # a centred binary dilation by VAD_MAX_SILENCE + 1 windows
    mask = np.convolve(mask, np.ones(VAD_MAX_SILENCE + 1))[half:half + len(mask)] > 0
    kept = wav[np.repeat(mask, VAD_WINDOW)]
    if len(kept) < MIN_SECONDS * SAMPLE_RATE:
        raise ValueError(f"voice audio has {len(kept) / SAMPLE_RATE:.2f} s of speech; "
                         f"at least {MIN_SECONDS} s is needed")
    return kept


def preprocess(pcm: np.ndarray, sample_rate: int) -> np.ndarray:
    """Validated PCM as the encoder wants it: 16 kHz mono float32, levelled, long silences cut.

    Raises ValueError for anything that is not usable speech audio.
    """
    wav = _resample(_as_float_mono(pcm), sample_rate)
    return _trim_long_silences(_normalize_volume(wav)).astype(np.float32)


# -- mel front end (librosa's melspectrogram defaults, without librosa) ---------------------

def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa htk=False): linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    log_mel = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(hz >= 1000.0, log_mel, hz / (200.0 / 3))


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    hz = mel * (200.0 / 3)
    return np.where(mel >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0)), hz)


def mel_filterbank(sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """(n_mels, 1 + n_fft // 2) triangular filters, area-normalised (norm="slaney")."""
    fft_hz = np.linspace(0.0, sample_rate / 2, 1 + n_fft // 2)
    mel_hz = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), n_mels + 2))
    widths = np.diff(mel_hz)
    ramps = mel_hz[:, None] - fft_hz[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    return weights * (2.0 / (mel_hz[2:] - mel_hz[:-2]))[:, None]


_MEL_BASIS = mel_filterbank().astype(np.float32)
_WINDOW = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)  # periodic Hann


def mel_spectrogram(wav: np.ndarray) -> np.ndarray:
    """(T, 40) float32 power mel frames of 16 kHz audio, T = 1 + len(wav) // 160.

    Centred frames with reflect padding, as the librosa of Resemblyzer's training used.
    """
    padded = np.pad(np.asarray(wav, dtype=np.float32), N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP]
    power = np.abs(np.fft.rfft(frames * _WINDOW, axis=1)) ** 2
    return (power.astype(np.float32) @ _MEL_BASIS.T).astype(np.float32)


# -- the Resemblyzer encoder ----------------------------------------------------------------

def weights_path() -> Path | None:
    """Where resemblyzer's pretrained.pt is, found without importing the package; None if absent."""
    try:
        spec = importlib.util.find_spec("resemblyzer")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "pretrained.pt"
        if path.is_file():
            return path
    return None


def _build_encoder(path: Path):
    """The network of resemblyzer.VoiceEncoder, with its weights, in eval mode on the CPU."""
    import torch
    from torch import nn

    class SpeakerEncoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(N_MELS, 256, 3, batch_first=True)
            self.linear = nn.Linear(256, 256)

        def forward(self, mels):
            _, (hidden, _) = self.lstm(mels)
            raw = torch.relu(self.linear(hidden[-1]))
            return raw / torch.norm(raw, dim=1, keepdim=True)

    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    # The file is a training checkpoint: model_state also holds the GE2E loss's similarity
    # scale and bias, which inference does not use; the rest must match exactly.
    state = {k: v for k, v in checkpoint["model_state"].items() if k.startswith(("lstm.", "linear."))}
    model = SpeakerEncoder()
    model.load_state_dict(state, strict=True)
    return model.eval()


def _encoder():
    """The encoder, built once per process; None when the weights are absent."""
    with _encoder_lock:
        if "model" not in _encoder_cache:
            path = weights_path()
            _encoder_cache["model"] = _build_encoder(path) if path else None
        return _encoder_cache["model"]


def _partial_slices(n_samples: int) -> list[slice]:
    """Mel-frame slices of the partial utterances (VoiceEncoder.compute_partial_slices)."""
    n_frames = int(np.ceil((n_samples + 1) / HOP))
    step = int(np.round((SAMPLE_RATE / PARTIAL_RATE) / HOP))
    starts = range(0, max(1, n_frames - PARTIAL_FRAMES + step + 1), step)
    slices = [slice(i, i + PARTIAL_FRAMES) for i in starts]
    coverage = (n_samples - slices[-1].start * HOP) / (PARTIAL_FRAMES * HOP)
    return slices[:-1] if coverage < MIN_COVERAGE and len(slices) > 1 else slices


def _l2(vector: np.ndarray) -> np.ndarray:
    """Unit length; a zero or non-finite vector means the audio held nothing to describe."""
    norm = float(np.linalg.norm(vector))
    if norm == 0.0 or not math.isfinite(norm):
        raise ValueError("voice audio gives no usable embedding (no variation, not speech)")
    return (vector / norm).astype(np.float32)


def resemblyzer_embedding(pcm: np.ndarray, sample_rate: int) -> np.ndarray:
    """The 256-d GE2E embedding; RuntimeError if the weights are absent."""
    return embed_preprocessed(preprocess(pcm, sample_rate))


def embed_preprocessed(wav: np.ndarray) -> np.ndarray:
    """The GE2E embedding of audio already through ``preprocess`` (VoiceEncoder.embed_utterance)."""
    import torch

    model = _encoder()
    if model is None:
        raise RuntimeError("resemblyzer's pretrained.pt is not installed")
    slices = _partial_slices(len(wav))
    wav = np.pad(wav, (0, max(0, slices[-1].stop * HOP - len(wav))))
    mel = mel_spectrogram(wav)
    batch = torch.from_numpy(np.stack([mel[s] for s in slices]))
    with _encoder_lock, torch.inference_mode():
        partials = _run_single_threaded(model, batch)
    return _l2(partials.mean(axis=0))


def _run_single_threaded(model, batch) -> np.ndarray:
    """One forward pass on one intra-op thread, the caller's setting restored afterwards.

    The LSTM is a recurrence over 160 steps of small matrix products: a second thread gains
    nothing, and on a busy machine the thread pool stalls for whole seconds (measured 1.5 s
    against a steady 55 ms). One thread also makes the result independent of the core count.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return model(batch).numpy()
    finally:
        torch.set_num_threads(previous)


# -- the fallback ---------------------------------------------------------------------------

_LIFTER = 1.0 + 11.0 * np.sin(np.pi * np.arange(1, N_MFCC + 1) / 22.0)


def mfcc_embedding(pcm: np.ndarray, sample_rate: int) -> np.ndarray:
    """The 40-d fallback: mean and standard deviation of MFCCs 1..20 over the voiced frames.

    MFCCs are the DCT of the log mel frames of the same front end. c0 (loudness) is left out,
    and frames more than 40 dB below the loud ones are skipped so pauses do not count. A
    sinusoidal lifter (HTK's, L = 22) damps c1, the spectral tilt that all speech shares and
    that otherwise pins every cosine near 1, and lifts the middle cepstra where formant
    positions show. Each half is unit length so neither dominates the cosine.
    """
    mel = mel_spectrogram(preprocess(pcm, sample_rate))
    log_mel = np.log10(mel + 1e-10)
    loudness = log_mel.max(axis=1)
    voiced = log_mel[loudness > np.percentile(loudness, 95) - VAD_BELOW_PEAK_DB / 10.0]
    mfcc = dct(voiced, type=2, norm="ortho", axis=1)[:, 1:N_MFCC + 1]
    mfcc = mfcc * _LIFTER
    mean, std = mfcc.mean(axis=0), mfcc.std(axis=0)
    return _l2(np.concatenate((_l2(mean), _l2(std))))


# -- public surface -------------------------------------------------------------------------

def voice_embedding(pcm: np.ndarray, sample_rate: int) -> tuple[np.ndarray, str]:
    """The speaker embedding of one recording and the name of the model that made it.

    ``pcm``: int16/int32/float PCM, mono or (frames, channels), at least 0.5 s of speech.
    Returns a unit-length float32 vector: ``RESEMBLYZER_MODEL`` (256-d) when its weights are
    installed, else ``MFCC_MODEL`` (40-d). Raises ValueError for unusable audio.
    """
    if _encoder() is not None:
        return resemblyzer_embedding(pcm, sample_rate), RESEMBLYZER_MODEL
    return mfcc_embedding(pcm, sample_rate), MFCC_MODEL


def _read_audio(source) -> tuple[np.ndarray, int]:
    import soundfile

    data = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else str(source)
    try:
        pcm, sample_rate = soundfile.read(data, dtype="float32", always_2d=False)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as exc:
        raise ValueError(f"voice reference is not readable audio: {exc}") from None
    return pcm, sample_rate


def embed_files(sources) -> tuple[np.ndarray, str]:
    """One speaker embedding for several reference recordings (paths or encoded bytes).

    Each recording is embedded on its own and the unit vectors are averaged, then
    re-normalised, as Resemblyzer's embed_speaker does.
    """
    sources = list(sources)
    if not sources:
        raise ValueError("no voice reference recordings given")
    results = [voice_embedding(*_read_audio(source)) for source in sources]
    return _l2(np.mean([vector for vector, _ in results], axis=0)), results[0][1]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two embeddings of the same model (1 = same direction)."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"embeddings of different models cannot be compared ({a.size} vs {b.size} dims)")
    norms = np.linalg.norm(a) * np.linalg.norm(b)
    if norms == 0.0 or not np.isfinite(norms):
        raise ValueError("cannot take the cosine of a zero or non-finite embedding")
    return float(np.dot(a, b) / norms)
