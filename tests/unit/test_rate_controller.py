"""The adaptive rate controller's shape: halve below the band, skip above it,
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
    # ...and no further than that: the largest ladder step that fits in half (64 -> 32, not 8).
    assert big == LADDER[-1] and shrink.target_tokens == max(s for s in LADDER if s <= big // 2) == 32


def test_a_buffer_that_will_not_last_until_the_next_audio_lands_is_below_the_band():
    c = RateController(CFG)
    c.observe(60, 2000, 20)
    for _ in range(6):
        c.request(4000)
    # 2.5 s buffered is inside the band, but not when the chunk under way needs 1.2 s more.
    assert not c.current(2500).low_latency
    assert c.current(2500, wait_ms=1200).low_latency
    ahead = c.request(2500, wait_ms=1200)
    assert ahead.low_latency and "before the next audio lands" in ahead.reason and ahead.target_tokens == 32
    assert c.request(2500, wait_ms=900).reason == "in the band: expand"  # 1.6 s left: it holds
    assert c.expected_cost_ms(10) == 10 * c.ms_per_token


def test_halving_stops_at_the_bottom_of_the_ladder():
    c = RateController(CFG)
    c.observe(60, 2000, 20)
    for _ in range(7):
        c.request(4000)
    sizes = [c.request(100).target_tokens for _ in range(8)]  # the buffer stays starved
    assert sizes[:3] == [32, 16, 8]
    assert sizes[3:] == [LADDER[0]] * 5  # 8 // 2 = 4 is below the ladder: stay at the first step, never 0
    assert min(sizes) == LADDER[0] and c.current(100).target_tokens == LADDER[0] and c.current(100).low_latency


def test_stepping_down_above_the_band_stops_at_the_bottom_of_the_ladder():
    c = RateController(CFG)
    c.observe(60, 2000, 20)
    first = c.request(9000)  # overgrown from the start: already on the first step
    assert first.skip and first.target_tokens == LADDER[0]
    assert c.request(4000).target_tokens == LADDER[1]
    assert c.request(9000).target_tokens == LADDER[0]  # one step down
    c.request(100)  # ends the episode (starved: halve, still the first step)
    again = c.request(9000)  # a new episode at the bottom: nowhere further down
    assert again.skip and again.target_tokens == LADDER[0]


def test_a_very_slow_engine_still_gets_the_first_step():
    c = RateController(CFG)
    c.observe(render_ms=20000, audio_ms=2000, tokens=20)  # 1 s per token: even 8 tokens break the budget
    assert c.sustainable_index() == 0
    sizes = [c.request(4000).target_tokens for _ in range(5)]
    assert sizes == [LADDER[0]] * 5  # expansion is capped at the first step, never below it


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
    assert c.ms_per_token > 3 * 10  # but it did move: alpha 0.3 of the outlier, 0.3 * 300 + 0.7 * 3
    assert abs(c.ms_per_token - (0.3 * 300 + 0.7 * 3)) < 1e-9


def test_low_latency_mode_and_disabled():
    assert RateController({**CFG, "mode": "low_latency"}).request(9000).target_tokens == LADDER[0]
    off = RateController({**CFG, "enabled": False}).request(100)
    assert off.target_tokens == 0 and not off.skip
