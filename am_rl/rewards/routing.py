"""data_source -> reward_type, and verl's (data_source, solution_str, ground_truth, extra_info) -> ScoreItem."""

import fnmatch
import json
from typing import Any, Mapping

from reward_server.types import REWARD_TYPES

# Patterns are fnmatch globs over the lower-cased data_source, tried in order; the first match wins.
DEFAULT_TABLE: dict[str, str] = {
    "*ifeval*": "ifeval",
    "*instruction*": "ifeval",
    "*code*": "code",
    "*livecodebench*": "code",
    "*leetcode*": "code",
    "*codeforces*": "code",
    "*taco*": "code",
    "*apps*": "code",
    "*math*": "math",
    "*gsm8k*": "math",
    "*aime*": "math",
    "*amc*": "math",
    "*deepscaler*": "math",
    "*arithmetic*": "math",
    "*chat*": "rm",
    "*general*": "rm",
}


class RewardRouter:
    def __init__(self, table: Mapping[str, str] | None = None):
        self.table = dict(DEFAULT_TABLE if table is None else table)
        bad = {k: v for k, v in self.table.items() if v not in REWARD_TYPES}
        if bad:
            raise ValueError(f"unknown reward types in data_source table {bad}; known: {list(REWARD_TYPES)}")

    def reward_type(self, data_source: str) -> str:
        source = str(data_source).lower()
        for pattern, reward_type in self.table.items():
            if fnmatch.fnmatchcase(source, pattern.lower()):
                return reward_type
        raise ValueError(f"no reward type for data_source {data_source!r}; table patterns: {list(self.table)}")

    def item(self, data_source: str, solution_str: str, ground_truth: Any, extra_info: Mapping | None = None) -> dict:
        """The /score item for one verl sample. Code and IFEval ground truths may arrive as JSON strings
        (parquet columns); the prompt, which ifeval and rm need, comes from extra_info["prompt"]."""
        reward_type = self.reward_type(data_source)
        if reward_type in ("code", "ifeval") and isinstance(ground_truth, str):
            ground_truth = json.loads(ground_truth)
        item = {"reward_type": reward_type, "response": solution_str, "ground_truth": _plain(ground_truth)}
        prompt = (extra_info or {}).get("prompt")
        if prompt is not None:
            item["prompt"] = prompt if isinstance(prompt, str) else json.dumps(_plain(prompt))
        return item


def _plain(value: Any) -> Any:
    """numpy arrays and scalars (verl's non_tensor_batch) as plain JSON values."""
    if hasattr(value, "tolist"):
        return _plain(value.tolist())
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
