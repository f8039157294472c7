"""Distillation's sampling and scoring (AM-Thinking-v1 report §2.2-2.3): k responses per query from each teacher,
verified and scored while they stream in. am_rl.data.curation then filters, grades and keeps.

Sampling: every teacher is an OpenAI-compatible endpoint (the load balancer in front of its vLLM servers, normally),
asked one sample per request by am_rl.rollout.RolloutClient with a token-id prompt from the teacher's chat template.
Each teacher has `concurrency` sampling slots; a slot appends its finished response to the DistillLog before it takes
the next request, so a killed run resumes where it stopped. Requests go out in a seeded shuffled order so the k
samples of a query spread over the engines (as am_rl.sampling does for training).

Verification: finished responses are batched to the reward service through am_rl.rewards.RewardScorer, the
trainer's scorer and data_source routing, and (optionally) scored for perplexity through a served scoring model's
prompt logprobs, while sampling goes on. A teacher that keeps failing, or a reward service that does, stops the
run with an error naming it; what was logged stays, and a rerun resumes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
import uuid

from tqdm import tqdm

from am_rl.data.distill_log import DistillLog, ResponseRecord, ScoreRecord
from am_rl.data.distill_options import DistillOptions, Endpoint, TeacherError
from am_rl.data.filters import check_response, perplexity
from am_rl.rewards.scorer import RewardScorer
from am_rl.rollout import RolloutClient, RolloutError, RolloutRejected, RolloutRequest

logger = logging.getLogger(__name__)

PPL_BATCH = 32  # responses per scoring-model request: one batched prefill instead of many small requests


class Progress:
    """A tqdm bar over responses, with tokens/s of this run beside tqdm's responses/s and ETA."""

    def __init__(self, total: int, done: int):
        self.bar = tqdm(total=total, initial=done, desc="distill", unit="resp", smoothing=0.1)
        self.tokens = 0
        self.start = time.monotonic()

    def update(self, record: ResponseRecord) -> None:
        self.tokens += record.response_tokens
        self.bar.set_postfix_str(f"{self.tokens / max(time.monotonic() - self.start, 1e-9):.0f} tok/s", refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def chat_prompt(tokenizer, messages: list[dict]) -> list[int]:
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)


class Verifier:
    """Scores responses as they are logged: rewards in batches through the reward service, perplexity through the
    scoring model, one ScoreRecord per response appended to the log (a later record of a key replaces an earlier).

    Perplexity is measured only for responses the local filters (truncated, structure, repetition, length) keep:
    it decides nothing about the others, and the truncated ones are the longest to score."""

    def __init__(self, rows: dict[str, dict], scorer: RewardScorer, log: DistillLog, opts: DistillOptions,
                 ppl: tuple[Endpoint, RolloutClient, object] | None):  # fmt: skip
        self.rows, self.scorer, self.log, self.opts, self.ppl = rows, scorer, log, opts, ppl
        self.queue: asyncio.Queue[ResponseRecord | None] = asyncio.Queue()

    async def run(self) -> None:
        """Until a None arrives: take what is queued (up to score_batch), score it, log it."""
        done = False
        while not done:
            batch = [await self.queue.get()]
            while len(batch) < self.opts.score_batch and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            if batch[-1] is None:
                batch.pop()
                done = True
            if batch:
                await self.score(batch)

    async def score(self, batch: list[ResponseRecord]) -> None:
        items = []
        for r in batch:
            row = self.rows[r.row_id]
            items.append(self.scorer.item(row["data_source"], r.text, row["reward_model"]["ground_truth"],
                                          row["extra_info"]))  # fmt: skip
        results, ppls = await asyncio.gather(self.scorer.score(items), self._perplexities(batch))
        for r, result, ppl in zip(batch, results, ppls, strict=True):
            answer = result.details.get("answer")
            self.log.add_score(ScoreRecord(r.row_id, r.teacher, r.sample, result.score, answer, ppl))

    async def _perplexities(self, batch: list[ResponseRecord]) -> list[float | None]:
        """Perplexity of each response under the scoring model, PPL_BATCH responses per request (None: no scoring
        model). A response the scoring model refuses (over its context) or an empty one has no finite perplexity:
        inf, which the filter drops."""
        if self.ppl is None:
            return [None] * len(batch)
        wanted = [r for r in batch if self.needs_perplexity(r)]
        measured = dict(zip((r.key for r in wanted), await self._measure(wanted)))
        return [measured.get(r.key) for r in batch]

    def needs_perplexity(self, r: ResponseRecord) -> bool:
        local = dataclasses.replace(self.opts.filters, max_perplexity=None)
        length = r.prompt_tokens + r.response_tokens
        return check_response(r.text, self.rows[r.row_id]["prompt"], r.finish_reason, length, None, local) is None

    async def _measure(self, batch: list[ResponseRecord]) -> list[float]:
        if not batch:
            return []
        endpoint, client, tokenizer = self.ppl
        sequences, starts = [], []
        for r in batch:
            prompt = chat_prompt(tokenizer, self.rows[r.row_id]["prompt"])
            sequences.append(prompt + tokenizer.encode(r.text, add_special_tokens=False))
            starts.append(len(prompt))

        async def chunk(i: int) -> list[list[float | None] | None]:
            part = sequences[i : i + PPL_BATCH]
            try:
                try:
                    return await client.prompt_logprobs(f"ppl-{batch[i].row_id}-{batch[i].teacher}-{i}", part)
                except RolloutRejected:  # one of them is too long for the scoring model: find it, score the rest
                    out = []
                    for j, seq in enumerate(part):
                        try:
                            out += await client.prompt_logprobs(f"ppl-{batch[i + j].row_id}-{i + j}", [seq])
                        except RolloutRejected as e:
                            logger.warning("scoring model refused %s: %s", batch[i + j].row_id, e)
                            out.append(None)
                    return out
            except RolloutError as e:
                raise TeacherError(f"scoring model {endpoint.name} at {endpoint.url} failed: {e}") from None

        parts = await asyncio.gather(*(chunk(i) for i in range(0, len(batch), PPL_BATCH)))
        scored = [logprobs for part in parts for logprobs in part]
        return [
            float("inf") if logprobs is None or len(logprobs) == start else perplexity(logprobs[start:])
            for logprobs, start in zip(scored, starts, strict=True)
        ]


async def _sample_teacher(teacher: Endpoint, tokenizer, todo: list[tuple[dict, int]], log: DistillLog,
                          verifier: Verifier | None, opts: DistillOptions, progress: Progress) -> None:  # fmt: skip
    """`todo` = (row, sample index) pairs, sampled through `opts.concurrency` slots sharing one iterator."""
    pending = iter(todo)
    prompts: dict[str, list[int]] = {}
    run = uuid.uuid4().hex[:8]  # request ids stay unique when a rerun asks again for what a killed run had in flight
    async with RolloutClient(teacher.url, teacher.model, max_concurrency=opts.concurrency,
                             max_retries=opts.retries) as client:  # fmt: skip

        async def slot() -> None:
            for row, j in pending:
                rid = row["extra_info"]["row_id"]
                if rid not in prompts:
                    prompts[rid] = chat_prompt(tokenizer, row["prompt"])
                prompt = prompts[rid]
                request = RolloutRequest(f"distill-{run}-{teacher.name}-{rid}-{j}", prompt, opts.max_tokens,
                                         opts.temperature, opts.top_p)  # fmt: skip
                try:
                    result = await client.generate(request)
                except RolloutRejected as e:
                    record = ResponseRecord(rid, teacher.name, j, str(e), len(prompt), 0, "rejected")
                except RolloutError as e:
                    raise TeacherError(f"teacher {teacher.name} at {teacher.url} failed: {e}") from None
                else:
                    text = tokenizer.decode(result.response_ids, skip_special_tokens=True)
                    record = ResponseRecord(rid, teacher.name, j, text, len(prompt), len(result.response_ids),
                                            result.finish_reason)  # fmt: skip
                log.add_response(record)
                progress.update(record)
                if verifier is not None and record.finish_reason != "rejected":
                    verifier.queue.put_nowait(record)

        async with asyncio.TaskGroup() as slots:  # a failing slot cancels its siblings
            for _ in range(opts.concurrency):
                slots.create_task(slot())


async def sample_and_score(rows: list[dict], teachers: list[Endpoint], tokenizers: dict, scorer: RewardScorer | None,
                           log: DistillLog, opts: DistillOptions,
                           ppl: tuple[Endpoint, RolloutClient, object] | None = None) -> dict:  # fmt: skip
    """Brings the log up to k responses per (row, teacher), each scored when opts.verify. Returns run numbers."""
    by_id = {row["extra_info"]["row_id"]: row for row in rows}
    todo = {t.name: [] for t in teachers}
    for row in rows:
        for t in teachers:
            for j in range(opts.k):
                if (row["extra_info"]["row_id"], t.name, j) not in log.responses:
                    todo[t.name].append((row, j))
    rng = random.Random(opts.seed)
    for items in todo.values():
        rng.shuffle(items)
    missing = sum(len(v) for v in todo.values())
    total = len(rows) * len(teachers) * opts.k
    verifier = Verifier(by_id, scorer, log, opts, ppl) if opts.verify else None
    if verifier is not None:  # logged by an earlier run but not scored before it stopped
        for key, r in log.responses.items():
            if r.finish_reason == "rejected" or r.row_id not in by_id:
                continue
            # unscored, or scored without the perplexity that this run's (looser) filters now need
            stale = key in log.scores and ppl is not None and log.scores[key].perplexity is None
            if key not in log.scores or (stale and verifier.needs_perplexity(r)):
                verifier.queue.put_nowait(r)
    progress = Progress(total, total - missing)
    start = time.monotonic()
    try:
        await _run_together(
            [_sample_teacher(t, tokenizers[t.name], todo[t.name], log, verifier, opts, progress) for t in teachers],
            verifier,
        )
    finally:
        progress.close()
    return {"requested": missing, "resumed_from_log": total - missing, "sampling_wall_s": time.monotonic() - start,
            "generated_tokens": progress.tokens}  # fmt: skip


async def _run_together(samplers: list, verifier: Verifier | None) -> None:
    """Samplers and the verifier side by side; the first failure cancels the rest and is raised as itself."""
    try:
        async with asyncio.TaskGroup() as group:
            if verifier is not None:
                group.create_task(verifier.run())

            async def sample_then_stop() -> None:
                async with asyncio.TaskGroup() as sampling:
                    for sampler in samplers:
                        sampling.create_task(sampler)
                if verifier is not None:
                    verifier.queue.put_nowait(None)

            group.create_task(sample_then_stop())
    except* Exception as failures:
        raise _first_leaf(failures) from None


def _first_leaf(group: BaseExceptionGroup) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first
