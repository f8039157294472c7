"""``am_ppo_clip`` is verl's ``vanilla`` PPO-clip loss unchanged, plus the largest per-token log-prob gap, compared
with a plain loop over the response tokens."""

import torch
from verl.trainer.ppo.core_algos import compute_policy_loss_vanilla, get_policy_loss_fn
from verl.workers.config import ActorConfig

from am_rl.algos.policy_loss import max_logprob_gap


def reference_gap(log_prob, old_log_prob, mask) -> float:
    gaps = [abs(float(log_prob.detach()[i, t] - old_log_prob[i, t])) for i in range(mask.shape[0]) for t in range(mask.shape[1])
            if mask[i, t]]  # fmt: skip
    return max(gaps, default=0.0)


def test_am_ppo_clip_is_vanilla_plus_the_largest_gap_on_response_tokens():
    torch.manual_seed(0)
    bs, length = 6, 9
    old = torch.randn(bs, length).clamp(max=0) - 0.1
    new = (old + 1e-3 * torch.randn(bs, length)).requires_grad_()
    adv = torch.randn(bs, length)
    mask = torch.arange(length)[None, :] < torch.tensor([9, 5, 1, 7, 3, 9])[:, None]
    new.data[1, 6] += 5.0  # a huge gap outside the response: must not count
    config = ActorConfig(strategy="fsdp2", rollout_n=2, ppo_micro_batch_size_per_gpu=1)

    loss, metrics = get_policy_loss_fn("am_ppo_clip")(old, new, adv, mask, "token-mean", config)
    ref_loss, ref_metrics = compute_policy_loss_vanilla(old, new, adv, mask, "token-mean", config)

    assert torch.equal(loss, ref_loss)
    assert {k: v for k, v in metrics.items() if k != "actor/rollout_logprob_gap_max"} == ref_metrics
    assert metrics["actor/rollout_logprob_gap_max"] == reference_gap(new, old, mask) < 1.0
    loss.backward()  # the metric takes nothing from the graph
    assert new.grad is not None


def test_gap_of_an_empty_response_is_zero():
    empty = torch.zeros(2, 0)
    assert max_logprob_gap(empty, empty, empty.bool()) == 0.0
    assert max_logprob_gap(torch.ones(2, 3), torch.zeros(2, 3), torch.zeros(2, 3).bool()) == 0.0
