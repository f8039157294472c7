import torch
from omegaconf import OmegaConf

from am_rl.cpu.actor import Actor
from am_rl.cpu.checkpoint import find_resume_dir, load_checkpoint, save_checkpoint
from am_rl.cpu.logprobs import response_logprobs

ACTOR_CFG = OmegaConf.create(
    {
        "optim": {"lr": 1e-2},
        "clip_ratio": 0.2,
        "loss_agg_mode": "token-mean",
        "grad_clip": 1.0,
        "policy_loss": {"loss_mode": "vanilla"},
    }
)
PROMPTS = [[1, 5, 9, 17], [3, 4], [8, 8, 8, 8, 8, 8]]
RESPONSES = [[20, 21, 22], [30], [40, 41, 42, 43, 44]]


def test_padded_batch_logprobs_equal_one_sequence_at_a_time(tiny_model):
    actor = Actor(tiny_model, ACTOR_CFG, pad_id=0)
    actor.model.eval()
    with torch.no_grad():
        batch, mask = response_logprobs(actor.model, PROMPTS, RESPONSES, pad_id=0)
        for i, (p, r) in enumerate(zip(PROMPTS, RESPONSES)):
            logits = actor.model(input_ids=torch.tensor([p + r])).logits[0]
            ref = torch.log_softmax(logits, -1)[len(p) - 1 : -1].gather(-1, torch.tensor(r)[:, None])[:, 0]
            torch.testing.assert_close(batch[i, : len(r)], ref, rtol=1e-5, atol=1e-5)
            assert torch.all(batch[i, len(r) :] == 0) and mask[i].sum() == len(r)


def test_update_moves_logprobs_in_the_direction_of_the_advantage(tiny_model):
    actor = Actor(tiny_model, ACTOR_CFG, pad_id=0)
    with torch.no_grad():
        before, mask = response_logprobs(actor.model, PROMPTS, RESPONSES, pad_id=0)
    sign = torch.tensor([1.0, -1.0, 1.0])
    advantages = sign[:, None] * mask  # (B, R)
    metrics = actor.update(PROMPTS, RESPONSES, advantages, rollout_logprobs=before)
    # Ratio 1 at the start of a strict on-policy step: the loss is -token-mean(A), nothing clipped.
    expected = -(advantages * mask).sum() / mask.sum()
    assert abs(metrics["actor/pg_loss"] - float(expected)) < 1e-5
    assert metrics["actor/pg_clipfrac"] == 0.0
    assert metrics["onpolicy/max_logprob_diff"] < 1e-5
    with torch.no_grad():
        after, _ = response_logprobs(actor.model, PROMPTS, RESPONSES, pad_id=0)
    seq_change = ((after - before) * mask).sum(-1)
    assert seq_change[0] > 0 and seq_change[1] < 0 and seq_change[2] > 0


def test_checkpoint_round_trip_and_auto_resume(tiny_model, tmp_path):
    actor = Actor(tiny_model, ACTOR_CFG, pad_id=0)
    mask = torch.ones(3, 5)
    actor.update(PROMPTS, RESPONSES, mask)
    cfg = OmegaConf.create({"x": 1})
    assert find_resume_dir("auto", tmp_path) is None
    save_checkpoint(tmp_path, 3, actor, cfg, [{"step": 3}], [{"step": 0}])
    save_checkpoint(tmp_path, 7, actor, cfg, [{"step": 7}], [{"step": 0}])
    assert find_resume_dir("auto", tmp_path) == tmp_path / "global_step_7"

    fresh = Actor(tiny_model, ACTOR_CFG, pad_id=0)
    step, history, evals = load_checkpoint(tmp_path / "global_step_7", fresh)
    assert (step, history, evals) == (7, [{"step": 7}], [{"step": 0}])
    for (k, a), (_, b) in zip(actor.model.state_dict().items(), fresh.model.state_dict().items()):
        assert torch.equal(a, b), k
    assert fresh.optimizer.state_dict()["state"].keys() == actor.optimizer.state_dict()["state"].keys()


def test_optimizer_follows_verls_optim_keys(tiny_model):
    optim = {"lr": 2e-3, "weight_decay": 0.0, "betas": [0.8, 0.95], "override_optimizer_config": {"eps": 1e-6}}
    actor = Actor(tiny_model, OmegaConf.merge(ACTOR_CFG, {"optim": optim}), pad_id=0)
    group = actor.optimizer.param_groups[0]
    assert type(actor.optimizer) is torch.optim.AdamW
    assert (group["lr"], group["weight_decay"], group["betas"], group["eps"]) == (2e-3, 0.0, (0.8, 0.95), 1e-6)
    # verl's default decay applies when the key is unset, as in verl's FSDP actor
    assert Actor(tiny_model, ACTOR_CFG, pad_id=0).optimizer.param_groups[0]["weight_decay"] == 0.01
