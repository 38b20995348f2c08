"""The adaptive rate controller's shape (seed 001): halve below the band, skip above it,
expand inside it up to what the engine sustains."""

from actors.rate_controller import LADDER, RateController

CFG = {"enabled": True, "mode": "steady", "comfort_low_ms": 1500, "comfort_high_ms": 8000, "ewma_alpha": 0.3}


def test_a_long_overgrowth_steps_down_once_not_on_every_poll():
    c = RateController(CFG)
    c.observe(60, 2000, 20)
    for _ in range(5):
        c.request(4000)
    before = c.request(4000).target_tokens
    skips = [c.request(9000) for _ in range(10)]  # the TTS re-asks every 200 ms while it withholds credit
    assert all(s.skip for s in skips)
    assert {s.target_tokens for s in skips} == {LADDER[LADDER.index(before) - 1]}


def test_starts_small_expands_in_the_band_and_stops_at_what_the_engine_sustains():
    c = RateController(CFG)
    c.observe(render_ms=120, audio_ms=2000, tokens=20)  # 6 ms per token
    sizes = [c.request(4000).target_tokens for _ in range(10)]
    assert sizes[0] == LADDER[1] and sizes == sorted(sizes)
    assert sizes[-1] == LADDER[-1]  # 64 tokens x 6 ms fits in half the low edge
    slow = RateController(CFG)
    slow.observe(render_ms=1200, audio_ms=2000, tokens=20)  # 60 ms per token: 750 ms budget -> 12 tokens
    assert max(slow.request(4000).target_tokens for _ in range(10)) == 12


def test_below_the_band_halves_and_goes_low_latency():
    c = RateController(CFG)
    c.observe(60, 2000, 20)
    for _ in range(6):
        c.request(4000)
    big = c.request(4000).target_tokens
    shrink = c.request(500)
    assert shrink.low_latency and not shrink.skip and shrink.target_tokens <= big // 2


def test_above_the_band_skips_a_request_and_steps_down():
    c = RateController(CFG)
    c.observe(60, 2000, 20)
    for _ in range(4):
        c.request(4000)
    before = c.request(4000).target_tokens
    over = c.request(9000)
    assert over.skip and over.target_tokens == LADDER[LADDER.index(before) - 1]


def test_ewma_does_not_chase_noise():
    c = RateController(CFG)
    c.observe(60, 2000, 20)
    c.observe(6000, 2000, 20)  # one outlier
    assert c.ms_per_token < 0.5 * 300  # moved toward it, far from it


def test_low_latency_mode_and_disabled():
    assert RateController({**CFG, "mode": "low_latency"}).request(9000).target_tokens == LADDER[0]
    off = RateController({**CFG, "enabled": False}).request(100)
    assert off.target_tokens == 0 and not off.skip
