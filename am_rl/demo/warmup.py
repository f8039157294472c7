"""Short supervised warm-up of the tiny model on synthetic arithmetic, so GRPO starts with signal.

A randomly initialised model never produces a ``\\boxed{}`` answer, so every reward is 0 and every GRPO
advantage is 0. A few hundred SFT steps teach it the format and some arithmetic (addition well, multiplication
poorly), which leaves accuracy in the range where group-relative advantages are informative. The result is cached
next to the base model, keyed by the base model and these settings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from am_rl.data.arithmetic import ArithmeticTask, sample_problem
from am_rl.models.tiny import build_once

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WarmupConfig:
    """Knobs and their defaults are documented in ``am_rl.config.schema`` (``am_rl.warmup`` and the task's
    ``am_rl.*`` keys).

    The lr is cosine-decayed to 10% over the steps. With a held-out split, only train problems are drawn.
    """

    steps: int
    batch_size: int
    lr: float
    seed: int
    task: ArithmeticTask

    def key(self) -> str:
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:12]

    def split(self) -> str:
        return "train" if self.task.held_out_percent else "all"


def sft_batch(tokenizer, rng: random.Random, cfg: WarmupConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, labels), labels -100 except on the assistant's answer and its <|im_end|>."""
    rows, label_rows = [], []
    for _ in range(cfg.batch_size):
        problem = sample_problem(rng, cfg.task, cfg.split())
        prompt = tokenizer.apply_chat_template(problem.messages(), tokenize=False, add_generation_prompt=True)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(problem.solution, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append(prompt_ids + answer_ids)
        label_rows.append([-100] * len(prompt_ids) + answer_ids)
    width = max(map(len, rows))
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    labels = torch.full((len(rows), width), -100)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (row, lab) in enumerate(zip(rows, label_rows, strict=True)):
        input_ids[i, : len(row)] = torch.tensor(row)
        labels[i, : len(lab)] = torch.tensor(lab)
        attention[i, : len(row)] = 1
    return input_ids, attention, labels


def train(model_dir: Path, out_dir: Path, cfg: WarmupConfig) -> float:
    """SFT ``model_dir`` into ``out_dir``; returns the final training loss."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.train()
    optim = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, T_max=cfg.steps, eta_min=cfg.lr * 0.1)
    loss = torch.tensor(float("nan"))
    for _ in tqdm(range(cfg.steps), desc="SFT warm-up", unit="step"):
        input_ids, attention, labels = sft_batch(tokenizer, rng, cfg)
        loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
        optim.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        sched.step()
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return float(loss)


def warm_model_dir(base_dir: Path, cfg: WarmupConfig) -> Path:
    """Where the warmed-up copy of ``base_dir`` for ``cfg`` is cached (beside it)."""
    return base_dir.parent / f"{base_dir.name}-sft-{cfg.key()}"


def ensure_warm_model(base_dir: Path, cfg: WarmupConfig) -> Path:
    """The warmed-up copy of ``base_dir`` for ``cfg``, trained once and cached beside it."""

    def train_into(out_dir: Path) -> None:
        logger.info("SFT warm-up done: final loss %.3f", train(base_dir, out_dir, cfg))

    return build_once(warm_model_dir(base_dir, cfg), train_into)
