"""Cancelling Piper: a barge-in or a crash rewind frees the engine at once, whenever the cancel
comes (mid-run, before the run, between sentences), and the next call is not affected.

Before this was fixed, a cancel mid-run surfaced as onnxruntime's generic Fail, which the noise
retry took for "noise too short" and answered by drawing 4x and 16x larger noise: the engine
stayed busy ~1.1 s after the cancel (longer than the whole synthesis), so the reply after a
barge-in was spoken by the fallback voice.
"""

import copy
import threading
import time

import pytest

from actors.adapters import SynthesisCancelled
from actors.adapters.piper import PiperAdapter
from persona.voice import load_voice
from protocol.config import load_config

ONE_SENTENCE = "and then I will be interrupted by you, and then I will be interrupted by you, once more."
THREE_SENTENCES = "One sentence here. Another sentence there. And a third one to finish the chunk off."
#: Far above the few ms a terminated run takes, far below a whole synthesis (~1 s here).
PROMPT_S = 0.3


@pytest.fixture(scope="module")
def adapter():
    piper = PiperAdapter(copy.deepcopy(load_config(None, [])))
    piper.load()
    return piper


def cancel_during(adapter, text, voice, after_s):
    """Synthesise in a thread, cancel ``after_s`` in: (what came back, seconds from the cancel)."""
    outcome = {}

    def speak():
        try:
            outcome["result"] = adapter.synthesize(text, voice)
        except Exception as exc:  # noqa: BLE001 -- the exception is what the test looks at
            outcome["result"] = exc

    adapter.new_call()
    thread = threading.Thread(target=speak)
    thread.start()
    time.sleep(after_s)
    cancelled_at = time.perf_counter()
    adapter.cancel()
    thread.join(10)
    assert not thread.is_alive()
    return outcome["result"], time.perf_counter() - cancelled_at


@pytest.mark.parametrize("voice_name", ["joe", "brisk"])  # zero noise, seeded noise
@pytest.mark.parametrize("text", [ONE_SENTENCE, THREE_SENTENCES])
def test_a_cancel_mid_synthesis_frees_the_engine_at_once(adapter, voice_name, text):
    voice = load_voice(voice_name)
    adapter.new_call()
    started = time.perf_counter()
    adapter.synthesize(text, voice)
    whole_s = time.perf_counter() - started
    result, after_cancel_s = cancel_during(adapter, text, voice, whole_s * 0.4)
    assert isinstance(result, SynthesisCancelled), result
    assert after_cancel_s < PROMPT_S, f"{after_cancel_s * 1000:.0f} ms after the cancel (whole synthesis {whole_s * 1000:.0f} ms)"


def test_a_cancel_before_the_run_starts_still_applies(adapter):
    voice = load_voice("joe")
    adapter.new_call()
    adapter.cancel()  # the worker has not reached the engine yet
    with pytest.raises(SynthesisCancelled):
        adapter.synthesize(ONE_SENTENCE, voice)


def test_the_next_call_after_a_cancel_speaks_normally(adapter):
    voice = load_voice("brisk")
    adapter.new_call()
    reference = adapter.synthesize(THREE_SENTENCES, voice)
    adapter.cancel()  # a cancel arriving after the synthesis ended
    adapter.new_call()
    again = adapter.synthesize(THREE_SENTENCES, voice)
    assert again.pcm.tobytes() == reference.pcm.tobytes()
