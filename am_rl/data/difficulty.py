"""Difficulty selection (DESIGN.md §2): sample k responses per query from the current model through the load
balancer, score them with the reward service, keep the queries with min < pass rate < max (default 0 < p < 1).

Sampling goes the way training rollouts go: the k copies of a batch of queries are shuffled across the balancer
(am_rl.sampling) and sent one sample per request by am_rl.rollout.RolloutClient; rewards come from
am_rl.rewards.RewardScorer, the trainer's scorer and data_source routing, so "solved" means what it means in training.

A query whose samples cannot be generated (e.g. the engine rejects a too-long prompt) is reported with its id
and the error; a reward service that keeps failing (infra) stops the run with RewardServiceError.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import httpx
from tqdm import tqdm

from am_rl.data.report import StageReport
from am_rl.data.rows import valid_rows
from am_rl.rewards.scorer import RewardScorer
from am_rl.rollout import RolloutClient, RolloutError, RolloutRequest
from am_rl.sampling import repeat_and_shuffle

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SelectOptions:
    k: int = 16  # samples per query (the report's 16)
    max_tokens: int = 24576  # response cap (stage 1's 24k); a capped sample scores as its text does
    temperature: float = 1.0  # rollout sampling, as in training
    top_p: float = 1.0
    min_pass_rate: float = 0.0  # keep queries whose pass rate is strictly above this ...
    max_pass_rate: float = 1.0  # ... and strictly below this
    pass_score: float = 1.0  # a sample passes when its reward is at least this
    rows_per_batch: int = 64  # queries sampled and scored together (bounds memory and in-flight requests)
    types: tuple[str, ...] = ("math", "code", "ifeval")  # reward types selected on; others pass through as they are
    seed: int = 0  # shuffle seed of the dispatch order
    # rows `distill` graded (extra_info.pass_rate over graded_samples) are selected on that grade, not sampled again;
    # it is the teachers' pass rate, not the current model's: the choice the DeepDistill grades make
    reuse_grades: bool = False

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if not 0.0 <= self.min_pass_rate < self.max_pass_rate <= 1.0:
            raise ValueError(
                f"need 0 <= min_pass_rate < max_pass_rate <= 1, got {self.min_pass_rate}, {self.max_pass_rate}"
            )


@dataclass
class PassRate:
    """One line of the pass-rate file (JSONL); stage2 reads the same fields from stage-1 logs."""

    row_id: str
    data_source: str
    reward_type: str
    k: int  # samples drawn (0: not sampled)
    passes: int  # samples with reward >= pass_score
    pass_rate: float | None  # passes / k; None for rows passed through unselected
    truncated: int  # samples that hit max_tokens
    kept: bool


def check_endpoint(url: str, what: str) -> None:
    try:
        httpx.get(f"{url.rstrip('/')}/healthz", timeout=10).raise_for_status()
    except httpx.HTTPError as e:
        raise ConnectionError(f"{what} at {url} is not healthy ({type(e).__name__}: {e})") from None


async def _sample_batch(
    batch: list[tuple[dict, str]], tokenizer, client: RolloutClient, opts: SelectOptions, batch_no: int, bar: tqdm
) -> list[list | str]:
    """Per row: its k RolloutResults (prompt-major), or the error that lost one of its samples."""
    prompts = [
        tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True, return_dict=False)
        for row, _ in batch
    ]
    plan = repeat_and_shuffle(prompts, n=opts.k, seed=opts.seed, step=batch_no)

    async def one(r):
        request = RolloutRequest(
            request_id=f"select-b{batch_no}-p{r.prompt_index}-k{r.sample_index}",
            prompt_ids=r.prompt,
            max_tokens=opts.max_tokens,
            temperature=opts.temperature,
            top_p=opts.top_p,
        )
        try:
            return await client.generate(request)
        except RolloutError as e:
            return e
        finally:
            bar.update(1)

    results = plan.restore(await asyncio.gather(*(one(r) for r in plan.requests)))
    out: list[list | str] = []
    for i in range(len(batch)):
        group = results[i * opts.k : (i + 1) * opts.k]
        error = next((g for g in group if isinstance(g, Exception)), None)
        out.append(str(error) if error is not None else group)
    return out


async def select_async(
    rows: list[dict],
    tokenizer,
    balancer_url: str,
    model: str,
    scorer: RewardScorer,
    opts: SelectOptions,
) -> tuple[list[dict], list[PassRate], StageReport]:
    report = StageReport("select", rows_in=len(rows))
    good = valid_rows(rows, scorer.router, report)
    report.after["valid"] = len(good)
    todo = [(row, rt) for row, rt in good if rt in opts.types]
    graded = [(row, rt) for row, rt in todo if opts.reuse_grades and _grade(row) is not None]
    todo = [(row, rt) for row, rt in todo if not (opts.reuse_grades and _grade(row) is not None)]
    kept: list[dict] = [row for row, rt in good if rt not in opts.types]
    rates = [
        PassRate(row["extra_info"]["row_id"], row["data_source"], rt, 0, 0, None, 0, True)
        for row, rt in good
        if rt not in opts.types
    ]
    report.notes["passed_through_unselected"] = len(kept)
    report.notes["reused_grades"] = len(graded)
    for row, rt in graded:
        _decide(row, rt, *_grade(row), 0, opts, kept, rates, report)
    sampled = 0
    async with RolloutClient(balancer_url, model) as client:
        bar = tqdm(total=len(todo) * opts.k, desc=f"select: sampling k={opts.k}", unit="sample")
        for batch_no, start in enumerate(range(0, len(todo), opts.rows_per_batch)):
            batch = todo[start : start + opts.rows_per_batch]
            groups = await _sample_batch(batch, tokenizer, client, opts, batch_no, bar)
            items, owners = [], []
            for (row, rt), group in zip(batch, groups, strict=True):
                rid = row["extra_info"]["row_id"]
                if isinstance(group, str):
                    logger.warning("row %s: a sample failed, the row is dropped: %s", rid, group)
                    report.drop(rid, "rollout_failed", group)
                    continue
                sampled += 1
                for result in group:
                    text = tokenizer.decode(result.response_ids, skip_special_tokens=True)
                    items.append(
                        scorer.item(row["data_source"], text, row["reward_model"]["ground_truth"], row["extra_info"])
                    )
                owners.append((row, rt, group))
            scores = [r.score for r in await scorer.score(items)] if items else []
            for n, (row, rt, group) in enumerate(owners):
                mine = scores[n * opts.k : (n + 1) * opts.k]
                passes = sum(s is not None and s >= opts.pass_score for s in mine)
                _decide(row, rt, opts.k, passes, sum(r.truncated for r in group), opts, kept, rates, report)
        bar.close()
    if todo and sampled == 0:
        first_error = report.dropped[-1].detail
        raise RolloutError(f"no query could be sampled through {balancer_url}: first error: {first_error}")
    report.after["sampled"] = sampled + len(graded) + report.notes["passed_through_unselected"]
    report.after["pass_rate_window"] = len(kept)
    report.rows_out = len(kept)
    report.notes["pass_rate_histogram"] = _histogram([r for r in rates if r.pass_rate is not None], opts.k)
    return kept, rates, report


def _grade(row: dict) -> tuple[int, int] | None:
    """(samples, passes) of a row distill graded, else None."""
    info = row["extra_info"]
    if info.get("pass_rate") is None or not info.get("graded_samples"):
        return None
    return int(info["graded_samples"]), int(info["graded_passes"])


def _decide(row, rt, k, passes, truncated, opts, kept, rates, report) -> None:
    """Keep `row` when its pass rate passes/k lies in the window; record its PassRate, or why it was dropped."""
    rate = passes / k
    keep = opts.min_pass_rate < rate < opts.max_pass_rate
    rid = row["extra_info"]["row_id"]
    rates.append(PassRate(rid, row["data_source"], rt, k, passes, rate, truncated, keep))
    if keep:
        kept.append({**row, "extra_info": {**row["extra_info"], "pass_rate": rate}})
    elif passes == k:
        report.drop(rid, "too_easy", f"passed {passes}/{k}")
    elif passes == 0:
        report.drop(rid, "too_hard", f"passed 0/{k}")
    else:
        report.drop(rid, "outside_pass_rate", f"passed {passes}/{k}")


def _histogram(rates: list[PassRate], k: int) -> dict[str, int]:
    counts = {f"{p}/{k}": 0 for p in range(k + 1)}
    for r in rates:
        key = f"{r.passes}/{r.k}"  # a reused grade may rest on another number of samples
        counts[key] = counts.get(key, 0) + 1
    return counts


def select(rows, tokenizer, balancer_url, model, reward_url, opts: SelectOptions, reward_timeout_s=900.0):
    """Blocking entry: checks both services answer, then runs the selection."""
    check_endpoint(balancer_url, "load balancer")
    check_endpoint(reward_url, "reward service")
    scorer = RewardScorer(reward_url, timeout_s=reward_timeout_s)
    return asyncio.run(select_async(rows, tokenizer, balancer_url, model, scorer, opts))
