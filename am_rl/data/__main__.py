"""python -m am_rl.data {ingest,clean,distill,select,stage2} ...: the data pipeline in front of the trainer.

Each subcommand reads its input, writes a verl-schema parquet and a JSON report beside it (<output stem>.report.json:
counts after every filter, every dropped row with its id and reason), and prints a one-line summary.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path

from am_rl.data.distill_options import TeacherError
from am_rl.data.report import StageReport, report_path
from am_rl.data.rows import read_rows, write_rows
from am_rl.rewards.client import RewardServiceError
from am_rl.rollout import RolloutError


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key or not value:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _stem_path(output: Path, suffix: str) -> Path:
    """A file beside the output: data/x.parquet -> data/x<suffix>."""
    return output.with_name(output.name.split(".")[0] + suffix)


def build_parser() -> argparse.ArgumentParser:
    from am_rl.data.clean import CleanOptions
    from am_rl.data.difficulty import SelectOptions
    from am_rl.data.distill_options import KEEP_MODES, DistillOptions
    from am_rl.data.filters import FilterOptions
    from am_rl.data.ingest import IngestOptions

    p = argparse.ArgumentParser(prog="python -m am_rl.data", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    def common(s):
        s.add_argument("-o", "--output", required=True, type=Path, help="output parquet")
        s.add_argument("--report", type=Path, default=None, help="report JSON (default: beside the output)")

    def sampling(s, defaults, k_help: str):
        """What distill and select sample with (their options dataclasses share these fields)."""
        s.add_argument("-k", type=int, default=defaults.k, help=k_help)
        s.add_argument("--max-tokens", type=int, default=defaults.max_tokens)
        s.add_argument("--temperature", type=float, default=defaults.temperature)
        s.add_argument("--top-p", type=float, default=defaults.top_p)
        s.add_argument("--seed", type=int, default=defaults.seed)

    i = sub.add_parser("ingest", help="JSONL / Parquet / save_to_disk folders -> verl-schema parquet")
    i.add_argument("inputs", nargs="+", type=Path)
    common(i)
    io = IngestOptions()
    i.add_argument("--data-source", default=None, help="for rows without data_source (default: the file's stem)")
    i.add_argument("--system-prompt", default=io.system_prompt, help="first message of every prompt ('' for none)")
    i.add_argument("--math-suffix", default=io.math_suffix, help="appended to math questions ('' for none)")
    i.add_argument("--field", action="append", default=[], type=_pair, metavar="OURS=THEIRS",
                   help="read our field from the input's column, e.g. question=title (repeatable)")  # fmt: skip
    i.add_argument("--split", default=None, help="split of a saved DatasetDict")

    c = sub.add_parser("clean", help="URL/image filter, exact + near dedup, decontamination")
    c.add_argument("input", type=Path)
    common(c)
    co = CleanOptions()
    c.add_argument("--eval", action="append", default=[], type=Path, metavar="FILE",
                   help="evaluation set to decontaminate against (repeatable)")  # fmt: skip
    c.add_argument("--near-dup-threshold", type=float, default=co.near_dup_threshold)
    c.add_argument("--shingle-chars", type=int, default=co.shingle_chars)
    c.add_argument("--num-perm", type=int, default=co.num_perm)
    c.add_argument("--ngram", type=int, default=co.ngram, help="word n-gram size of the contamination check")

    d = sub.add_parser("distill", help="teachers' responses, verified, filtered, graded -> verl multi-turn SFT parquet")
    d.add_argument("input", type=Path, help="verl-schema queries (from ingest/clean)")
    common(d)
    do, fo = DistillOptions(), FilterOptions()
    d.add_argument("--teacher", action="append", required=True, type=_pair, metavar="NAME=URL",
                   help="an OpenAI-compatible endpoint serving a teacher (repeatable; --keep's order)")  # fmt: skip
    d.add_argument("--teacher-model", action="append", default=[], type=_pair, metavar="NAME=MODEL",
                   help="the model name NAME's endpoint serves (default: NAME)")  # fmt: skip
    d.add_argument("--tokenizer", required=True, help="HF tokenizer with the teachers' chat template")
    d.add_argument("--teacher-tokenizer", action="append", default=[], type=_pair, metavar="NAME=PATH",
                   help="another tokenizer for teacher NAME")  # fmt: skip
    d.add_argument("--reward-url", required=True, help="the reward service")
    d.add_argument("--ppl-url", default=None, help="endpoint of the perplexity scoring model (default: no perplexity)")
    d.add_argument("--ppl-model", default=None, help="the scoring model's served name")
    d.add_argument("--ppl-tokenizer", default=None, help="the scoring model's tokenizer (default: --tokenizer)")
    d.add_argument("--log", type=Path, default=None,
                   help="the resumable response log (default: <output stem>.distill_log.jsonl)")  # fmt: skip
    d.add_argument("--graded", type=Path, default=None,
                   help="the queries with their grades (default: <output stem>.graded.parquet)")  # fmt: skip
    d.add_argument("--chart", type=Path, default=None, help="teacher chart (default: <output stem>.teachers.png)")
    sampling(d, do, "responses per query from each teacher")
    d.add_argument("--concurrency", type=int, default=do.concurrency, help="in-flight requests per teacher")
    d.add_argument("--retries", type=int, default=do.retries, help="retries of a failed request per teacher")
    d.add_argument("--pass-score", type=float, default=do.pass_score, help="verified at reward >= this")
    d.add_argument("--passes", type=int, default=do.passes, help="passes per teacher for the coefficient of variation")
    d.add_argument("--keep", choices=KEEP_MODES, default=do.keep)
    d.add_argument("--fix-ground-truth", default=None, metavar="TEACHER",
                   help="fix ground truths the majority disputes where this teacher's majority agrees")  # fmt: skip
    d.add_argument("--keep-truncated", action="store_true", help="filter off: responses that hit --max-tokens")
    d.add_argument("--no-structure", action="store_true", help="filter off: complete think and answer parts")
    d.add_argument("--no-answer-tags", action="store_true", help="any non-empty text after </think> is the answer")
    d.add_argument("--repetition-min-copies", type=int, default=fo.repetition_min_copies,
                   help="drop a phrase repeated this many times in a row (0: filter off)")  # fmt: skip
    d.add_argument("--repetition-max-ngram", type=int, default=fo.repetition_max_ngram)
    d.add_argument("--max-length", type=int, default=fo.max_length, help="SFT max tokens (0: filter off)")
    d.add_argument("--max-perplexity", type=float, default=None, help="drop above this perplexity (needs --ppl-url)")

    s = sub.add_parser("select", help="difficulty selection: keep min < pass rate < max under the current model")
    s.add_argument("input", type=Path)
    common(s)
    so = SelectOptions()
    s.add_argument("--balancer-url", required=True, help="the load balancer fronting the model's vLLM servers")
    s.add_argument("--model", required=True, help="the model name the engines serve")
    s.add_argument("--tokenizer", required=True, help="HF tokenizer (model directory) that applies the chat template")
    s.add_argument("--reward-url", required=True, help="the reward service (its API key: $AM_RL_REWARD_API_KEY)")
    s.add_argument("--pass-rates", type=Path, default=None,
                   help="pass-rate JSONL (default: <output stem>.pass_rates.jsonl)")  # fmt: skip
    sampling(s, so, "samples per query")
    s.add_argument("--min-pass-rate", type=float, default=so.min_pass_rate, help="keep pass rate > this")
    s.add_argument("--max-pass-rate", type=float, default=so.max_pass_rate, help="keep pass rate < this")
    s.add_argument("--pass-score", type=float, default=so.pass_score, help="a sample passes at reward >= this")
    s.add_argument("--rows-per-batch", type=int, default=so.rows_per_batch)
    s.add_argument("--types", default=",".join(so.types), help="reward types to select on; others pass through")
    s.add_argument("--reuse-grades", action="store_true",
                   help="rows distill graded (extra_info.pass_rate): selected on that grade, not sampled")  # fmt: skip

    t = sub.add_parser("stage2", help="stage-1 data minus queries solved k/k, plus chat / instruction-following mixes")
    t.add_argument("input", type=Path, help="the stage-1 parquet")
    common(t)
    t.add_argument("--logs", action="append", default=[], type=Path, required=True, metavar="JSONL",
                   help="stage-1 pass-rate records {row_id, k, passes} (repeatable; later records win)")  # fmt: skip
    t.add_argument("--mix", action="append", default=[], type=_pair, metavar="PARQUET=RATIO",
                   help="add round(RATIO x unsolved stage-1 rows) rows of PARQUET (repeatable)")  # fmt: skip
    t.add_argument("--mix-count", action="append", default=[], type=_pair, metavar="PARQUET=N",
                   help="add N rows of PARQUET (repeatable)")  # fmt: skip
    t.add_argument("--seed", type=int, default=0)
    return p


def run(args: argparse.Namespace) -> StageReport:
    if args.command == "ingest":
        from am_rl.data.ingest import IngestOptions, ingest

        opts = IngestOptions(data_source=args.data_source, system_prompt=args.system_prompt,
                             math_suffix=args.math_suffix, renames=tuple(args.field), split=args.split)  # fmt: skip
        rows, report = ingest(args.inputs, opts)
    elif args.command == "clean":
        from am_rl.data.clean import CleanOptions, clean

        opts = CleanOptions(near_dup_threshold=args.near_dup_threshold, shingle_chars=args.shingle_chars,
                            num_perm=args.num_perm, ngram=args.ngram, eval_files=tuple(args.eval))  # fmt: skip
        rows, report = clean(read_rows(args.input), opts)
    elif args.command == "distill":
        rows, report = _distill(args)
    elif args.command == "select":
        from transformers import AutoTokenizer

        from am_rl.data.difficulty import SelectOptions, select

        opts = SelectOptions(k=args.k, max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p,
                             min_pass_rate=args.min_pass_rate, max_pass_rate=args.max_pass_rate,
                             pass_score=args.pass_score, rows_per_batch=args.rows_per_batch,
                             types=tuple(t for t in args.types.split(",") if t), seed=args.seed,
                             reuse_grades=args.reuse_grades)  # fmt: skip
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
        rows, rates, report = select(read_rows(args.input), tokenizer, args.balancer_url, args.model,
                                     args.reward_url, opts)  # fmt: skip
        rates_path = args.pass_rates or _stem_path(args.output, ".pass_rates.jsonl")
        rates_path.parent.mkdir(parents=True, exist_ok=True)
        rates_path.write_text("".join(json.dumps(asdict(r)) + "\n" for r in rates))
        report.notes["pass_rates_file"] = str(rates_path)
    else:
        from am_rl.data.stage2 import MixSpec, build_stage2

        mixes = tuple(MixSpec(Path(p), ratio=float(v)) for p, v in args.mix)
        mixes += tuple(MixSpec(Path(p), count=int(v)) for p, v in args.mix_count)
        rows, report = build_stage2(read_rows(args.input), args.logs, mixes, seed=args.seed)
    report.notes["output"] = str(args.output)
    path = report.write(args.report or report_path(args.output))
    print(report.summary())
    print(f"report: {path}")
    write_rows(rows, args.output)
    return report


def _distill(args: argparse.Namespace):
    from am_rl.data.distill import distill
    from am_rl.data.distill_options import DistillOptions, Endpoint
    from am_rl.data.filters import FilterOptions
    from am_rl.data.teacher_report import plot_teachers

    models, tokenizers = dict(args.teacher_model), dict(args.teacher_tokenizer)
    teachers = [Endpoint(name, url, models.get(name, name), tokenizers.get(name, args.tokenizer))
                for name, url in args.teacher]  # fmt: skip
    unknown = (set(models) | set(tokenizers)) - {t.name for t in teachers}
    if unknown:
        raise ValueError(f"--teacher-model/--teacher-tokenizer name no --teacher: {sorted(unknown)}")
    ppl = None
    if args.ppl_url:
        if not args.ppl_model:
            raise ValueError("--ppl-url needs --ppl-model")
        ppl = Endpoint("scoring-model", args.ppl_url, args.ppl_model, args.ppl_tokenizer or args.tokenizer)
    filters = FilterOptions(drop_truncated=not args.keep_truncated, structure=not args.no_structure,
                            answer_tags=not args.no_answer_tags,
                            repetition_min_copies=args.repetition_min_copies or None,
                            repetition_max_ngram=args.repetition_max_ngram, max_length=args.max_length or None,
                            max_perplexity=args.max_perplexity)  # fmt: skip
    opts = DistillOptions(k=args.k, max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p,
                          concurrency=args.concurrency, retries=args.retries, seed=args.seed,
                          pass_score=args.pass_score, passes=args.passes, keep=args.keep,
                          fix_ground_truth_with=args.fix_ground_truth, filters=filters)  # fmt: skip
    log = args.log or _stem_path(args.output, ".distill_log.jsonl")
    result = distill(read_rows(args.input), teachers, args.reward_url, opts, log, ppl)
    result.report.notes["log"] = str(log)
    if result.graded_rows:  # none when no query could be sampled: the report says why, the SFT write then fails
        graded = args.graded or _stem_path(args.output, ".graded.parquet")
        write_rows(result.graded_rows, graded)
        chart = args.chart or _stem_path(args.output, ".teachers.png")
        plot_teachers(result.samples, result.report.notes["teachers"], chart)
        result.report.notes.update(graded=str(graded), chart=str(chart))
    return result.sft_rows, result.report


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (FileNotFoundError, ValueError, ConnectionError, RolloutError, RewardServiceError, TeacherError) as e:
        print(f"python -m am_rl.data {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
