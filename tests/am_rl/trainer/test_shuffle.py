"""Shuffle before verl's agent-loop dispatch and restore after: pure functions against a plain reference, and the
manager's dispatch with simulated agent-loop workers (echo workers standing in for Ray actors; no engines)."""


import numpy as np
import pytest
import torch
from gpu_helpers import LocalActor
from omegaconf import OmegaConf
from verl import DataProto

from am_rl.trainer.agent_loop import AMAgentLoopManager
from am_rl.trainer.shuffle import restore_order, shuffle_for_dispatch


def repeated_batch(prompts: int, n: int, step: int = 1) -> DataProto:
    """verl's layout after ``gen_batch.repeat(n, interleave=True)``: the n copies of a prompt are contiguous."""
    uids = np.array([f"p{i}" for i in range(prompts)], dtype=object)
    raw = np.array([f"q{i}" for i in range(prompts)], dtype=object)
    batch = DataProto.from_single_dict({"prompt_id": torch.arange(prompts), "uid": uids, "raw_prompt": raw})
    batch.meta_info["global_steps"] = step
    return batch.repeat(repeat_times=n, interleave=True)


def test_shuffle_matches_reference_and_restore_inverts_it():
    batch = repeated_batch(8, 4)
    shuffled, perm = shuffle_for_dispatch(batch, seed=0, step=5)
    reference_rows = [list(batch.non_tensor_batch["uid"])[j] for j in perm]  # plain-Python permutation
    assert list(shuffled.non_tensor_batch["uid"]) == reference_rows
    assert shuffled.batch["prompt_id"].tolist() == [batch.batch["prompt_id"][j].item() for j in perm]
    assert sorted(perm.tolist()) == list(range(32)) and perm.tolist() != list(range(32))
    restored = restore_order(shuffled, perm)
    assert list(restored.non_tensor_batch["uid"]) == list(batch.non_tensor_batch["uid"])
    assert torch.equal(restored.batch["prompt_id"], batch.batch["prompt_id"])


def test_permutation_is_reproducible_per_step_and_differs_between_steps():
    batch = repeated_batch(8, 4)
    _, a = shuffle_for_dispatch(batch, seed=0, step=1)
    _, b = shuffle_for_dispatch(batch, seed=0, step=1)
    _, c = shuffle_for_dispatch(batch, seed=0, step=2)
    assert a.tolist() == b.tolist() and a.tolist() != c.tolist()


def test_restore_refuses_a_wrong_length():
    batch = repeated_batch(2, 2)
    shuffled, perm = shuffle_for_dispatch(batch, seed=0, step=0)
    with pytest.raises(ValueError, match="expected 4 generated rows"):
        restore_order(shuffled.select_idxs(np.arange(3)), perm)


class EchoWorker:
    """Simulated agent-loop worker: returns one generated row per input row (what verl's worker guarantees), with
    a response length that identifies the row, and the metrics verl's manager aggregates."""

    async def generate_sequences(self, batch: DataProto) -> DataProto:
        rows = len(batch)
        out = DataProto.from_single_dict(
            {
                "responses": torch.zeros(rows, 4, dtype=torch.long),
                "response_mask": torch.ones(rows, 4, dtype=torch.long),
                "prompts": torch.zeros(rows, 2, dtype=torch.long),
                "uid": batch.non_tensor_batch["uid"],
                "truncated": np.ones(rows, dtype=bool),
                "finish_reason": np.array(["length"] * rows, dtype=object),
            }
        )
        metric = {"generate_sequences": 0.0, "tool_calls": 0.0, "compute_score": 0.0, "num_preempted": 0}
        out.meta_info["metrics"] = [metric] * rows
        return out


def manager_with(workers: int, shuffle: bool) -> tuple[AMAgentLoopManager, list[LocalActor]]:
    from am_rl.config.load import compose

    cfg = compose("gpu_smoke", ["actor_rollout_ref.model.path=/unused", f"am_rl.shuffle={str(shuffle).lower()}"])
    OmegaConf.set_struct(cfg, False)
    cfg.am_rl.balancer.url = "http://127.0.0.1:1"  # never called: the workers are simulated
    manager = AMAgentLoopManager(cfg, llm_client=None)
    actors = [LocalActor(EchoWorker()) for _ in range(workers)]
    manager.agent_loop_workers = actors
    return manager, actors


def groups_per_worker(actors: list[LocalActor]) -> list[int]:
    return [len(set(a.received[0])) for a in actors]


def test_manager_spreads_siblings_over_workers_and_restores_order():
    batch = repeated_batch(8, 4)  # 32 rows, 4 workers
    manager, actors = manager_with(4, shuffle=True)
    output = manager.generate_sequences(batch)  # sync, as verl calls it (auto_await)
    assert list(output.non_tensor_batch["uid"]) == list(batch.non_tensor_batch["uid"])
    # verl's contiguous chunks give each worker exactly 2 whole groups; shuffled, a worker sees siblings of more.
    assert sum(groups_per_worker(actors)) > 8
    siblings_together = max(max(np.unique(a.received[0], return_counts=True)[1]) for a in actors)
    assert siblings_together < 4


def test_without_shuffle_verl_keeps_groups_on_one_worker():
    batch = repeated_batch(8, 4)
    manager, actors = manager_with(4, shuffle=False)
    output = manager.generate_sequences(batch)  # sync, as verl calls it (auto_await)
    assert groups_per_worker(actors) == [2, 2, 2, 2]  # the crowding the shuffle removes
    assert list(output.non_tensor_batch["uid"]) == list(batch.non_tensor_batch["uid"])
