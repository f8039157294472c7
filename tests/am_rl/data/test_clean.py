"""Clean: each filter on small inputs with asserted counts and the evidence in the report."""

import json

from am_rl.data.clean import CleanOptions, clean, shingles, word_ngrams

WORD_PROBLEM = (
    "Tom has 3 apples and then buys 4 more apples at the market on Sunday. How many apples does Tom have now?"
)


def ids(rows):
    return [r["extra_info"]["row_id"] for r in rows]


def test_each_filter_counts_and_reasons(tmp_path, make_rows):
    evals = tmp_path / "aime.jsonl"
    long_eval = "Let N be the number of consecutive zeros at the right end of the decimal representation of 100!."
    evals.write_text(json.dumps({"problem": long_eval}) + "\n" + json.dumps({"question": "What is 9*9?"}) + "\n")
    rows = make_rows(
        [
            {"question": "What is 2+3?", "answer": "5"},  # 1 kept
            {"question": "What is 2+4?", "answer": "6"},  # 2 kept: one character apart is not a near-dup
            {"question": "what  is 2+3? ", "answer": "5"},  # 3 exact dup of 1 (case/space-insensitive)
            {"question": "See http://x.io/a for 1+1", "answer": "2"},  # 4 url
            {"question": "What is shown in the image?", "answer": "2"},  # 5 image reference
            {"question": '<img src="a.gif"> count', "answer": "2"},  # 6 image
            {"question": WORD_PROBLEM, "answer": "7"},  # 7 kept
            {"question": WORD_PROBLEM.replace("now?", "in total now?"), "answer": "7"},  # 8 near dup of 7
            {"question": "Solve: " + long_eval.replace("100!.", "50!."), "answer": "1"},  # 9 contaminated (13-gram)
            {"question": "What is 9*9?", "answer": "81"},  # 10 contaminated (short eval item, whole)
            {"question": "What is 9+9?", "answer": "18"},  # 11 kept: symbols are tokens, 9+9 is not 9*9
        ]
    )
    out, report = clean(rows, CleanOptions(eval_files=(evals,)))
    assert ids(out) == ["arithmetic:1", "arithmetic:2", "arithmetic:7", "arithmetic:11"]
    assert report.after == {
        "valid": 11, "urls_images": 8, "exact_dedup": 7, "near_dedup": 6, "decontaminate": 4,
    }  # fmt: skip
    why = {d.row_id: (d.reason, d.detail) for d in report.dropped}
    assert why["arithmetic:3"] == ("exact_duplicate", "same question as arithmetic:1")
    assert why["arithmetic:4"] == ("url", "http://x.io/a")
    assert why["arithmetic:5"][0] == why["arithmetic:6"][0] == "image"
    assert why["arithmetic:8"][0] == "near_duplicate" and "arithmetic:7" in why["arithmetic:8"][1]
    assert why["arithmetic:9"][0] == why["arithmetic:10"][0] == "contaminated"
    assert "aime.jsonl:1" in why["arithmetic:9"][1] and "aime.jsonl:2" in why["arithmetic:10"][1]
    assert report.rows_in == 11 and report.rows_out == 4


def test_near_dup_threshold_is_the_exact_jaccard(make_rows):
    a = "alpha beta gamma delta epsilon zeta eta theta iota kappa"
    b = a.replace("kappa", "lambda")
    rows = make_rows([{"question": a, "answer": "1"}, {"question": b, "answer": "1"}])
    sa, sb = shingles(a, 5), shingles(b, 5)
    jaccard = len(sa & sb) / len(sa | sb)
    assert 0.7 < jaccard < 0.95
    kept_strict, _ = clean(rows, CleanOptions(near_dup_threshold=jaccard + 0.01))
    kept_loose, report = clean(rows, CleanOptions(near_dup_threshold=jaccard - 0.01))
    assert len(kept_strict) == 2 and len(kept_loose) == 1
    assert report.dropped[0].detail.startswith(f"Jaccard {jaccard:.2f}")


def test_no_false_near_dups_among_many_short_arithmetic_questions(make_rows):
    from am_rl.data.arithmetic import ArithmeticTask, make_problems

    unique = {p.question: p for p in make_problems(400, seed=3, task=ArithmeticTask(max_operand=20))}
    rows = make_rows([{"question": q, "answer": p.answer} for q, p in unique.items()])
    out, report = clean(rows, CleanOptions())
    assert len(out) == len(unique) and report.dropped == []


def test_bad_rows_are_reported_not_cleaned(make_rows):
    rows = make_rows([{"question": "What is 1+1?", "answer": "2"}])
    broken = {**rows[0], "reward_model": {"style": "rule"}, "extra_info": {**rows[0]["extra_info"], "row_id": "b:1"}}
    out, report = clean(rows + [broken, {"prompt": "x"}], CleanOptions())
    assert ids(out) == ["arithmetic:1"]
    assert [(d.row_id, d.reason) for d in report.dropped] == [("b:1", "bad_row"), ("row:3", "bad_row")]


def test_word_ngrams_short_texts_are_one_gram():
    assert word_ngrams("What is 2+2?", 13) == {("what", "is", "2", "+", "2", "?")}
    assert len(word_ngrams(" ".join(map(str, range(20))), 13)) == 8
