"""Clean: drop queries with URLs or image references, exact duplicates, near duplicates (MinHash LSH from
`datasketch`), and queries that overlap an evaluation set (word n-grams). Filters run in that order; every
dropped row is reported with its id, the filter, and the evidence (the match, the row it duplicates, the n-gram).

All filters look at the bare question (rows.question_text), never the templated prompt: the shared system prompt
and math suffix would make any two short questions near-duplicates.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from datasketch import MinHash, MinHashLSH
from tqdm import tqdm

from am_rl.data.ingest import QUESTION_KEYS, read_records
from am_rl.data.report import StageReport
from am_rl.data.rows import question_text, valid_rows
from am_rl.rewards.routing import RewardRouter

URL = re.compile(r"(?:https?|ftp)://\S+|\bwww\.[a-z0-9-]+\.\S+", re.IGNORECASE)
IMAGE = re.compile(
    r"!\[[^\]]*\]\([^)]*\)"  # markdown image
    r"|<img\b[^>]*>"  # html image
    r"|<image>|\[image\]"  # dataset image placeholders
    r"|\b[\w./-]+\.(?:png|jpe?g|gif|bmp|svg|webp|tiff?)\b"  # image file names
    r"|\b(?:see|shown in|refer to|in|from) the (?:attached |following |above |below )?"
    r"(?:image|figure|picture|diagram|photo|graph)\b",  # questions that need a picture to be answered
    re.IGNORECASE,
)
_TOKEN = re.compile(r"\w+|[^\w\s]")  # words and single symbols: "4+4" and "4*4" must differ


@dataclass(frozen=True)
class CleanOptions:
    near_dup_threshold: float = 0.8  # Jaccard similarity of character shingles at or above which rows are near-dups
    shingle_chars: int = 5  # character n-gram size of the near-dup shingles
    num_perm: int = 128  # MinHash permutations (more: better Jaccard estimates, slower)
    ngram: int = 13  # word n-gram size for decontamination (13 as in GPT-3's and Llama's contamination checks)
    eval_files: tuple[Path, ...] = ()  # evaluation sets (JSONL / Parquet / save_to_disk folders / .txt lines)
    seed: int = 1  # MinHash seed


def normalise_text(text: str) -> str:
    """Case-, width- and whitespace-insensitive form used by every comparison."""
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


def shingles(text: str, size: int) -> set[str]:
    if len(text) <= size:
        return {text}
    return {text[i : i + size] for i in range(len(text) - size + 1)}


def word_ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    """Word n-grams (symbols count as words) of `text`; a text shorter than n words is one gram (so a short eval
    question still matches a training copy of itself)."""
    words = tuple(_TOKEN.findall(normalise_text(text)))
    if len(words) < n:
        return {words} if words else set()
    return {words[i : i + n] for i in range(len(words) - n + 1)}


def eval_texts(path: Path) -> list[tuple[str, str]]:
    """(where, question) for every item of an evaluation file."""
    path = Path(path)
    if path.suffix == ".txt":
        lines = path.read_text(encoding="utf-8").splitlines()
        return [(f"{path.name}:{i}", line) for i, line in enumerate(lines, start=1) if line.strip()]
    texts = []
    for number, record in read_records(path):
        if not isinstance(record, dict):
            continue
        if isinstance(record.get("prompt"), list):
            text = question_text(record)
        else:
            text = next((record[k] for k in QUESTION_KEYS if isinstance(record.get(k), str)), "")
        if text.strip():
            texts.append((f"{path.name}:{number}", text))
    if not texts:
        raise ValueError(f"evaluation file {path} has no questions (looked for {', '.join(QUESTION_KEYS)})")
    return texts


def _minhash(shingle_set: set[str], opts: CleanOptions) -> MinHash:
    m = MinHash(num_perm=opts.num_perm, seed=opts.seed)
    m.update_batch(s.encode("utf-8") for s in shingle_set)
    return m


def clean(rows: list[dict], opts: CleanOptions, router: RewardRouter | None = None) -> tuple[list[dict], StageReport]:
    report = StageReport("clean", rows_in=len(rows))
    rows = [row for row, _ in valid_rows(rows, router or RewardRouter(), report)]
    report.after["valid"] = len(rows)
    ids = [r["extra_info"]["row_id"] for r in rows]
    texts = [normalise_text(question_text(r)) for r in rows]
    keep = list(range(len(rows)))

    kept = []
    for i in tqdm(keep, desc="clean: urls/images", unit="row"):
        raw = question_text(rows[i])
        if m := URL.search(raw):
            report.drop(ids[i], "url", m.group(0))
        elif m := IMAGE.search(raw):
            report.drop(ids[i], "image", m.group(0))
        else:
            kept.append(i)
    keep, report.after["urls_images"] = kept, len(kept)

    kept, first_with = [], {}
    for i in tqdm(keep, desc="clean: exact dups", unit="row"):
        key = hashlib.sha256(texts[i].encode()).hexdigest()
        if key in first_with:
            report.drop(ids[i], "exact_duplicate", f"same question as {ids[first_with[key]]}")
        else:
            first_with[key] = i
            kept.append(i)
    keep, report.after["exact_dedup"] = kept, len(kept)

    # The index proposes candidates from 0.1 below the threshold with bands weighted for recall (~99% at the
    # threshold, where balanced bands find only ~40%); the exact Jaccard of the shingle sets then decides.
    lsh = MinHashLSH(threshold=max(0.05, opts.near_dup_threshold - 0.1), num_perm=opts.num_perm, weights=(0.1, 0.9))
    shingle_sets: dict[int, set[str]] = {}
    kept = []
    for i in tqdm(keep, desc="clean: near dups", unit="row"):
        shingle_sets[i] = shingles(texts[i], opts.shingle_chars)
        minhash = _minhash(shingle_sets[i], opts)
        best, best_sim = None, 0.0
        for j in lsh.query(minhash):
            sim = len(shingle_sets[i] & shingle_sets[j]) / len(shingle_sets[i] | shingle_sets[j])
            if sim > best_sim:
                best, best_sim = j, sim
        if best is not None and best_sim >= opts.near_dup_threshold:
            report.drop(ids[i], "near_duplicate", f"Jaccard {best_sim:.2f} with {ids[best]}")
        else:
            lsh.insert(i, minhash)
            kept.append(i)
    keep, report.after["near_dedup"] = kept, len(kept)

    if opts.eval_files:
        grams: dict[tuple[str, ...], str] = {}
        for path in opts.eval_files:
            for where, text in eval_texts(path):
                for gram in word_ngrams(text, opts.ngram):
                    grams.setdefault(gram, where)
        report.notes["eval_items_ngrams"] = len(grams)
        kept = []
        for i in tqdm(keep, desc="clean: decontaminate", unit="row"):
            hit = next((g for g in word_ngrams(question_text(rows[i]), opts.ngram) if g in grams), None)
            if hit is not None:
                report.drop(ids[i], "contaminated", f"{' '.join(hit)!r} also in {grams[hit]}")
            else:
                kept.append(i)
        keep, report.after["decontaminate"] = kept, len(kept)

    out = [rows[i] for i in keep]
    report.rows_out = len(out)
    return out, report
