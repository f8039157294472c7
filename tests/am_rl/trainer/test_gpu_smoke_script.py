"""scripts/gpu_smoke.sh: parses, and its dry-run mode (all but the 2 GPU steps) builds the tiny model and data and
prints the plan of the smoke config through the real entry point."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "scripts" / "gpu_smoke.sh"


def test_script_parses():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0


def test_dry_run_mode_builds_model_and_data_and_prints_the_plan(tmp_path, tiny_model):
    env = {**os.environ, "PYTHON": sys.executable, "AM_RL_SMOKE_DIR": str(tmp_path), "AM_RL_SMOKE_DRY_RUN": "1"}
    result = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    plan = (tmp_path / "plan.txt").read_text()
    assert "1 node(s) x 1 GPUs" in plan and "4 prompts x 4 samples = 16 samples" in plan
    assert "am_rl.trainer.server_client.BalancerServerClient" in plan
    assert f"model: {tiny_model}" in result.stderr
    train = pd.read_parquet(tmp_path / "data" / "train.parquet")
    assert len(train) == 64 and set(train.columns) >= {"data_source", "prompt", "reward_model", "extra_info"}
    assert train.iloc[0]["reward_model"]["ground_truth"].isdigit()
