"""From the distill log to the SFT set: filters, the ground-truth check, difficulty grades and which responses are
kept (AM-Thinking-v1 report §2.2-2.3, DeepDistill's grades).

Per query, over the responses of this run's teachers and sample indices:
1. every response runs the filters (am_rl.data.filters); a response that passes and is verified (reward >= pass score;
   reward-model types have no verification) is a candidate;
2. math queries get the ground-truth check: the teachers' answers are grouped by Math-Verify equivalence (pairs
   compared by the reward service's math verifier, the trainer's), and the largest group is the majority. It
   disagrees with the ground truth when none of its responses verified. With a checking teacher named, the majority is
   over the other teachers, and the ground truth is replaced by the majority answer only where the checker's own
   majority falls in the same group; that query's responses are then verified again against it;
3. the grade (pass rate, coefficient of variation) over every scored response, the filters notwithstanding: it says
   how hard the query is, not how clean the responses are;
4. keep: `all` candidates, the `shortest-verified` one, or the first in `teacher-order` (the --teacher order).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from am_rl.data.distill_options import DistillOptions
from am_rl.data.distill_log import DistillLog, ResponseRecord, ScoreRecord
from am_rl.data.filters import Drop, check_response
from am_rl.data.grades import Grade, cluster_answers, grade, majority
from am_rl.data.report import StageReport
from am_rl.rewards.scorer import RewardScorer

MAX_DISTINCT_ANSWERS = 16  # the most common answers compared pairwise per query (d answers: d(d-1)/2 comparisons)


@dataclass
class Sample:
    """One response of the run with everything decided about it."""

    record: ResponseRecord
    score: ScoreRecord | None  # None: rejected by the endpoint
    drop: Drop | None = None  # the filter that dropped it
    verified: bool | None = None  # reward >= pass score; None for reward-model types

    @property
    def id(self) -> str:
        return f"{self.record.row_id}/{self.record.teacher}/{self.record.sample}"

    @property
    def candidate(self) -> bool:
        return self.score is not None and self.drop is None and self.verified is not False


def collect(rows: list[tuple[dict, str]], teachers: list[str], log: DistillLog, opts: DistillOptions):
    """{row id: [Sample]} for this run's (teacher, sample index) keys, filters applied."""
    out = {}
    for row, _ in rows:
        rid = row["extra_info"]["row_id"]
        samples = []
        for t in teachers:
            for j in range(opts.k):
                record = log.responses[(rid, t, j)]
                if record.finish_reason == "rejected":
                    samples.append(Sample(record, None))
                    continue
                score = log.scores[(rid, t, j)]
                length = record.prompt_tokens + record.response_tokens
                drop = check_response(record.text, row["prompt"], record.finish_reason, length, score.perplexity,
                                      opts.filters)  # fmt: skip
                samples.append(Sample(record, score, drop))
        out[rid] = samples
    return out


def set_verified(samples: list[Sample], reward_type: str, pass_score: float) -> None:
    for s in samples:
        if s.score is not None:
            s.verified = None if reward_type == "rm" else (s.score.reward or 0.0) >= pass_score


async def _equal_pairs(answers_by_row: dict[str, list[str]], scorer: RewardScorer) -> dict[str, set[tuple[str, str]]]:
    """Per row, the pairs of its distinct answers that Math-Verify (in the reward service) calls equal."""
    pairs, owners = [], []
    for rid, answers in answers_by_row.items():
        distinct = [a for a, _ in Counter(answers).most_common(MAX_DISTINCT_ANSWERS)]
        for i, a in enumerate(distinct):
            for b in distinct[i + 1 :]:
                pairs.append({"reward_type": "math", "response": f"\\boxed{{{a}}}", "ground_truth": b})
                owners.append((rid, a, b))
    equal: dict[str, set[tuple[str, str]]] = {rid: set() for rid in answers_by_row}
    if pairs:
        for (rid, a, b), result in zip(owners, await scorer.score(pairs), strict=True):
            if (result.score or 0.0) >= 1.0:
                equal[rid].add((a, b))
    return equal


def _answers(samples: list[Sample], keep) -> list[str]:
    return [s.score.answer.strip() for s in samples if s.score and s.score.answer and keep(s.record.teacher)]


async def check_ground_truths(rows: dict[str, dict], samples: dict[str, list[Sample]], scorer: RewardScorer,
                              opts: DistillOptions) -> dict:  # fmt: skip
    """The majority-vs-ground-truth check of the math rows; fixes ground truths in `rows` where the checker agrees,
    and verifies those rows' responses again. Returns the report's section."""
    checker = opts.fix_ground_truth_with
    answers = {rid: _answers(samples[rid], lambda t: True) for rid, row in rows.items()}
    equal = await _equal_pairs({rid: a for rid, a in answers.items() if a}, scorer)
    disagreements, fixes = [], {}
    for rid, row in rows.items():
        main = _answers(samples[rid], lambda t: t != checker)
        top = majority(main, equal.get(rid, set()))
        if top is None:
            continue
        answer, votes = top
        # the majority's class among every answer of the query, the checker's included
        group = next(c for c in cluster_answers(answers[rid], equal[rid]) if answer in c)
        if any(s.verified and s.score.answer and s.score.answer.strip() in group for s in samples[rid]):
            continue
        entry = {"row_id": rid, "ground_truth": row["reward_model"]["ground_truth"], "majority": answer,
                 "votes": votes, "answers": len(main), "answer_counts": dict(Counter(main).most_common(8))}  # fmt: skip
        if checker:
            own = majority(_answers(samples[rid], lambda t: t == checker), equal[rid])
            entry["checker_majority"] = own[0] if own else None
            entry["fixed"] = own is not None and own[0] in group
            if entry["fixed"]:
                fixes[rid] = answer
        disagreements.append(entry)
    if fixes:
        await _fix(rows, samples, fixes, scorer, opts)
    return {"checked": sum(bool(a) for a in answers.values()), "disagreements": len(disagreements),
            "fixed": len(fixes), "checker": checker, "rows": disagreements}  # fmt: skip


async def _fix(rows, samples, fixes: dict[str, str], scorer: RewardScorer, opts: DistillOptions) -> None:
    items, owners = [], []
    for rid, answer in fixes.items():
        row = rows[rid]
        old = row["reward_model"]["ground_truth"]
        rows[rid] = {**row, "reward_model": {**row["reward_model"], "ground_truth": answer},
                     "extra_info": {**row["extra_info"], "ground_truth_fixed_from": old}}  # fmt: skip
        for s in samples[rid]:
            if s.score is not None:
                items.append(scorer.item(row["data_source"], s.record.text, answer, row["extra_info"]))
                owners.append(s)
    for s, result in zip(owners, await scorer.score(items), strict=True):
        s.score = ScoreRecord(s.score.row_id, s.score.teacher, s.score.sample, result.score, s.score.answer,
                              s.score.perplexity)  # fmt: skip
        s.verified = (result.score or 0.0) >= opts.pass_score


def choose(samples: list[Sample], teachers: list[str], keep: str) -> list[Sample]:
    candidates = [s for s in samples if s.candidate]
    if keep == "all" or not candidates:
        return candidates
    order = {t: i for i, t in enumerate(teachers)}
    if keep == "shortest-verified":
        return [min(candidates, key=lambda s: (s.record.response_tokens, order[s.record.teacher], s.record.sample))]
    return [min(candidates, key=lambda s: (order[s.record.teacher], s.record.sample))]


def sft_row(row: dict, s: Sample) -> dict:
    """verl's multi-turn SFT row: the query's messages, then the teacher's answer as the final (trained) turn."""
    r = s.record
    return {
        "messages": [*row["prompt"], {"role": "assistant", "content": r.text}],
        "data_source": row["data_source"],
        "extra_info": {"row_id": r.row_id, "teacher": r.teacher, "sample": r.sample,
                       "tokens": r.prompt_tokens + r.response_tokens},  # fmt: skip
    }


def graded_row(row: dict, g: Grade | None, rm_score: float | None) -> dict:
    info = dict(row["extra_info"])
    if g is not None:  # select reads these instead of sampling again (am_rl.data.difficulty)
        info.update(pass_rate=g.pass_rate, pass_rate_cv=g.pass_rate_cv, graded_samples=g.samples,
                    graded_passes=g.passes)  # fmt: skip
    if rm_score is not None:
        info["rm_score"] = rm_score
    return {**row, "extra_info": info}


async def curate(rows: list[tuple[dict, str]], teachers: list[str], log: DistillLog, scorer: RewardScorer,
                 opts: DistillOptions, report: StageReport):  # fmt: skip
    """(SFT rows, graded rows, every Sample by row id); drops and checks go into `report`."""
    samples = collect(rows, teachers, log, opts)
    types = {row["extra_info"]["row_id"]: rt for row, rt in rows}
    by_id = {row["extra_info"]["row_id"]: row for row, _ in rows}
    for rid, ss in samples.items():
        set_verified(ss, types[rid], opts.pass_score)
    math_rows = {rid: row for rid, row in by_id.items() if types[rid] == "math"}
    report.notes["ground_truth"] = await check_ground_truths(math_rows, samples, scorer, opts)
    by_id.update(math_rows)  # fixed ground truths

    sft, graded = [], []
    for rid, row in by_id.items():
        ss = samples[rid]
        scored = [s for s in ss if s.score is not None]
        if not scored:
            report.drop(rid, "rollout_rejected", ss[0].record.text)
            continue
        g, rm = None, None
        if types[rid] == "rm":
            rm = sum(s.score.reward or 0.0 for s in scored) / len(scored)
        else:
            outcomes: dict[str, dict[int, bool]] = {}
            for s in scored:
                outcomes.setdefault(s.record.teacher, {})[s.record.sample] = bool(s.verified)
            g = grade(outcomes, opts.passes)
        graded.append(graded_row(row, g, rm))
        kept = choose(ss, teachers, opts.keep)
        if kept:
            sft.extend(sft_row(row, s) for s in kept)
        else:
            why = Counter(s.drop.reason if s.drop else "unverified" if s.score else "rejected" for s in ss)
            report.drop(rid, "no_response_kept", ", ".join(f"{n} {r}" for r, n in sorted(why.items())))
    return sft, graded, samples


def response_section(samples: dict[str, list[Sample]], kept_ids: set[str]) -> dict:
    """The report's per-response counts and every response not kept, with why."""
    flat = [s for ss in samples.values() for s in ss]
    dropped = []
    for s in flat:
        if s.score is None:
            dropped.append({"response": s.id, "reason": "rejected", "detail": s.record.text[:300]})
        elif s.drop is not None:
            dropped.append({"response": s.id, "reason": s.drop.reason, "detail": s.drop.detail})
        elif s.verified is False:
            dropped.append({"response": s.id, "reason": "unverified",
                            "detail": f"reward {s.score.reward} (answer {s.score.answer!r})"})  # fmt: skip
        elif s.id not in kept_ids:
            dropped.append({"response": s.id, "reason": "not_chosen", "detail": "another response of the query kept"})
    return {
        "responses": len(flat),
        "kept": len(kept_ids),
        "dropped_by_reason": dict(Counter(d["reason"] for d in dropped)),
        "dropped": dropped,
    }
