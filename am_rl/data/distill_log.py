"""The append-only log that makes distillation resumable: one JSON line per finished response, keyed by
(row id, teacher, sample index), written and flushed before its sampling slot asks for the next one; one more line
per response once it is verified and scored. A rerun reads the log, requests only what is missing and scores only
what is unscored, so a run stopped at any moment loses at most the requests that were in flight.

A process killed mid-write leaves a torn last line: it is cut off on open (and counted), never mistaken for a
record. A damaged line anywhere else is an error naming its line: the log is not ours to guess about. The first line
records the sampling settings; resuming with different ones would mix two distributions under one key, and is
refused (more samples per query, or more teachers, are fine: they are new keys).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

Key = tuple[str, str, int]  # (row id, teacher, sample index)


@dataclass(frozen=True)
class ResponseRecord:
    row_id: str
    teacher: str
    sample: int
    text: str  # decoded without special tokens, as the reward service and the SFT set see it
    prompt_tokens: int  # in the teacher's tokenizer
    response_tokens: int
    finish_reason: str  # stop | length | rejected (the endpoint refused the request; `text` is its error)

    @property
    def key(self) -> Key:
        return self.row_id, self.teacher, self.sample


@dataclass(frozen=True)
class ScoreRecord:
    row_id: str
    teacher: str
    sample: int
    reward: float | None  # the reward service's score (rule types 0/1; rm: the model's mean); None: not verified
    answer: str | None  # the extracted final answer (math), for the ground-truth check
    perplexity: float | None  # under the scoring model; None when no scoring model is set

    @property
    def key(self) -> Key:
        return self.row_id, self.teacher, self.sample


class DistillLog:
    def __init__(self, path: str | Path, settings: dict):
        """Opens (or starts) the log at `path` for a run with these sampling `settings` (JSON-able)."""
        self.path = Path(path)
        self.responses: dict[Key, ResponseRecord] = {}
        self.scores: dict[Key, ScoreRecord] = {}
        self.torn_lines = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path.stat().st_size:
            self._load(settings)
            self._file = open(self.path, "a")
        else:
            self._file = open(self.path, "w")
            self._write({"kind": "settings", **settings})

    def _load(self, settings: dict) -> None:
        data = self.path.read_bytes()
        good_end = data.rfind(b"\n") + 1
        if good_end < len(data):  # killed mid-line: the torn record is dropped, its response requested again
            self.torn_lines = 1
            logger.warning("%s: cutting a torn last line (%d bytes)", self.path, len(data) - good_end)
            with open(self.path, "r+b") as f:
                f.truncate(good_end)
        for n, line in enumerate(data[:good_end].splitlines(), start=1):
            try:
                record = json.loads(line)
                kind = record.pop("kind")
                if kind == "settings":
                    if record != settings:
                        raise ValueError(
                            f"{self.path} was written with sampling settings {record}, this run has {settings}: "
                            "use a new log (--log) or the same settings"
                        )
                elif kind == "response":
                    r = ResponseRecord(**record)
                    self.responses[r.key] = r
                elif kind == "score":
                    s = ScoreRecord(**record)
                    self.scores[s.key] = s
                else:
                    raise ValueError(f"unknown record kind {kind!r}")
            except (ValueError, TypeError, KeyError) as e:
                raise ValueError(f"{self.path}:{n}: damaged distill log line ({e})") from None

    def _write(self, record: dict) -> None:
        # One write per line, flushed at once: a killed process leaves whole lines (plus at most one torn tail).
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()

    def add_response(self, r: ResponseRecord) -> None:
        self._write({"kind": "response", **asdict(r)})
        self.responses[r.key] = r

    def add_score(self, s: ScoreRecord) -> None:
        self._write({"kind": "score", **asdict(s)})
        self.scores[s.key] = s

    def close(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
