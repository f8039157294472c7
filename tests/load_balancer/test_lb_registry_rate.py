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
