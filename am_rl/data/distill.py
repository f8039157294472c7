"""Distillation end to end: queries in; the SFT set, the graded queries, the report and the teacher chart out.

    sample + score (am_rl.data.distill_sampling, resumable through am_rl.data.distill_log)
      -> filter, check ground truths, grade, keep (am_rl.data.curation)
      -> teachers side by side (am_rl.data.teacher_report)

The SFT set is verl's multi-turn format (a `messages` column); train on it with verl's SFT trainer and the
recipes/sft_*.yaml recipes, whose dataset class (am_rl.sft.dataset) puts the loss on the final assistant turn only.
The graded rows are the input rows with their difficulty in extra_info, which `select --reuse-grades` reads.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx

from am_rl.data.curation import Sample, curate, response_section
from am_rl.data.difficulty import check_endpoint
from am_rl.data.distill_log import DistillLog
from am_rl.data.distill_options import DistillOptions, Endpoint
from am_rl.data.distill_sampling import sample_and_score
from am_rl.data.grades import percentiles
from am_rl.data.report import StageReport
from am_rl.data.rows import valid_rows
from am_rl.data.teacher_report import compare_teachers
from am_rl.rewards.scorer import RewardScorer
from am_rl.rollout import RolloutClient


@dataclass
class DistillResult:
    sft_rows: list[dict]  # verl multi-turn SFT rows
    graded_rows: list[dict]  # the input rows that were sampled, with pass_rate / pass_rate_cv / rm_score
    report: StageReport
    samples: dict[str, list[Sample]]  # every response of the run by row id, for the teacher chart


def check_teacher(endpoint: Endpoint) -> None:
    """Any OpenAI-compatible server lists its models at /v1/models (the balancer relays its engines')."""
    try:
        httpx.get(f"{endpoint.url.rstrip('/')}/v1/models", timeout=10).raise_for_status()
    except httpx.HTTPError as e:
        raise ConnectionError(f"teacher {endpoint.name} at {endpoint.url} is not answering "
                              f"({type(e).__name__}: {e})") from None  # fmt: skip


def _load_tokenizers(endpoints: list[Endpoint]) -> dict[str, object]:
    """{tokenizer path: tokenizer}, each loaded once."""
    from transformers import AutoTokenizer

    return {path: AutoTokenizer.from_pretrained(path) for path in dict.fromkeys(e.tokenizer for e in endpoints)}


def check_setup(teachers: list[Endpoint], opts: DistillOptions, ppl_model: Endpoint | None) -> None:
    """Refuse a run that cannot do what it was asked, before anything is contacted."""
    names = [t.name for t in teachers]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"need at least one teacher, with unique names; got {names}")
    if opts.fix_ground_truth_with is not None and (opts.fix_ground_truth_with not in names or len(names) < 2):
        raise ValueError(f"--fix-ground-truth needs a second teacher: {opts.fix_ground_truth_with!r} must be one of "
                         f"the teachers {names}, beside at least one other whose majority it checks")  # fmt: skip
    if opts.filters.max_perplexity is not None and ppl_model is None:
        raise ValueError("a perplexity threshold needs a scoring model (--ppl-url)")


async def distill_async(rows: list[dict], teachers: list[Endpoint], scorer: RewardScorer, opts: DistillOptions,
                        log_path, ppl_model: Endpoint | None = None) -> DistillResult:  # fmt: skip
    check_setup(teachers, opts, ppl_model)
    names = [t.name for t in teachers]
    report = StageReport("distill", rows_in=len(rows))
    good = valid_rows(rows, scorer.router, report)
    report.after["valid"] = len(good)
    tokenizers = _load_tokenizers(teachers + ([ppl_model] if ppl_model else []))
    log = DistillLog(log_path, opts.sampling_settings())
    ppl = None
    try:
        if ppl_model is not None:
            ppl_client = RolloutClient(ppl_model.url, ppl_model.model, max_concurrency=opts.concurrency,
                                       max_retries=opts.retries)  # fmt: skip
            ppl = (ppl_model, ppl_client, tokenizers[ppl_model.tokenizer])
        by_teacher = {t.name: tokenizers[t.tokenizer] for t in teachers}
        run = await sample_and_score([row for row, _ in good], teachers, by_teacher, scorer, log, opts, ppl)
    finally:
        if ppl is not None:
            await ppl[1].aclose()
        log.close()
    run["torn_log_lines"] = log.torn_lines
    report.notes["run"] = run
    sft, graded, samples = await curate(good, names, log, scorer, opts, report)
    kept_ids = {f"{r['extra_info']['row_id']}/{r['extra_info']['teacher']}/{r['extra_info']['sample']}" for r in sft}
    report.notes["responses"] = response_section(samples, kept_ids)
    sources = {row["extra_info"]["row_id"]: row["data_source"] for row, _ in good}
    report.notes["teachers"] = compare_teachers(samples, sources, kept_ids)
    rates = [r["extra_info"]["pass_rate"] for r in graded if "pass_rate" in r["extra_info"]]
    report.notes["pass_rate_percentiles"] = percentiles(rates)
    report.notes["keep"] = opts.keep
    report.notes["sft_samples"] = len(sft)
    report.after["sampled"] = len(graded)
    report.after["with_kept_response"] = len({r["extra_info"]["row_id"] for r in sft})
    report.rows_out = report.after["with_kept_response"]
    return DistillResult(sft, graded, report, samples)


def distill(rows, teachers: list[Endpoint], reward_url: str, opts: DistillOptions, log_path,
            ppl_model: Endpoint | None = None, reward_timeout_s: float = 900.0) -> DistillResult:  # fmt: skip
    """Blocking entry: checks every service answers, then samples (resuming `log_path`), scores and curates."""
    check_setup(teachers, opts, ppl_model)
    for t in teachers + ([ppl_model] if ppl_model else []):
        check_teacher(t)
    check_endpoint(reward_url, "reward service")
    scorer = RewardScorer(reward_url, timeout_s=reward_timeout_s)
    return asyncio.run(distill_async(rows, teachers, scorer, opts, log_path, ppl_model))
