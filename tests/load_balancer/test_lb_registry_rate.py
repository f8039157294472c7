"""The relayed-token rate per instance: a sliding window whose sum is kept as entries come and go."""

from load_balancer.registry import Instance


def test_relayed_rate_counts_only_the_window():
    inst = Instance("http://127.0.0.1:1")
    for k in range(100):  # 3 tokens every 0.1 s from t=0 to t=9.9
        inst.record_relayed(3, k * 0.1)
    assert inst.relayed_rate(10.0, 5.0) == 3 * 50 / 5.0  # entries at t >= 5.0
    assert inst.relayed_rate(12.0, 5.0) == 3 * 30 / 5.0  # older ones dropped as time goes on
    assert inst.relayed_rate(30.0, 5.0) == 0.0 and not inst.relayed
    inst.record_relayed(7, 30.5)
    assert inst.relayed_rate(31.0, 5.0) == 7 / 5.0 and inst.tokens_relayed == 307


def test_decode_step_is_measured_only_over_clean_scrape_intervals():
    """running / tokens-per-second of the interval, and only when the same sequences ran throughout with no queue."""
    inst = Instance("http://127.0.0.1:1")
    inst.record_scrape(8, 0, 0.1, 1_000.0, 0.0)
    assert inst.decode_step_s is None  # one scrape: no interval yet
    inst.record_scrape(8, 0, 0.1, 1_400.0, 0.25)  # 400 tokens in 0.25 s by 8 sequences: 50 steps of 5 ms
    assert inst.decode_step_s == 8 / (400 / 0.25) == 0.005
    assert inst.state(0.25, 5.0).decode_step_s == 0.005
    inst.record_scrape(8, 0, 0.1, 1_400.0, 0.5)  # a prefill stall: no tokens (the old rate EWMA only halved)
    assert inst.decode_step_s is None and inst.scraped_rate > 0
    inst.record_scrape(9, 0, 0.1, 1_600.0, 0.75)  # a sequence was admitted inside the interval
    assert inst.decode_step_s is None
    inst.record_scrape(9, 3, 0.1, 1_800.0, 1.0)  # a queue formed
    assert inst.decode_step_s is None
    inst.record_scrape(9, 0, 0.1, 2_000.0, 1.25)  # the queue was there at the interval's start
    assert inst.decode_step_s is None
    inst.record_scrape(9, 0, 0.1, 2_450.0, 1.5)
    assert inst.decode_step_s == 9 / (450 / 0.25)
    inst.record_scrape(0, 0, 0.0, 2_450.0, 1.75)  # idle
    assert inst.decode_step_s is None
