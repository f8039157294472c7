"""Wire types of the reward service: what crosses HTTP (requests, results) and Redis (jobs).

Requests are a discriminated union on `reward_type`, so an unknown type or a ground truth of the wrong shape
fails validation (422 with the offending field) before anything is queued.
"""

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StdioTest(_Strict):
    input: str  # fed to the program's stdin
    output: str  # expected stdout, compared after trailing-whitespace normalisation


class CallTest(_Strict):
    input: list[JsonValue]  # positional arguments of fn_name
    output: JsonValue  # expected return value, compared in the parent after a JSON round trip


class StdioCodeTruth(_Strict):
    language: Literal["python", "cpp"]
    test_type: Literal["stdin_stdout"]
    tests: list[StdioTest] = Field(min_length=1)  # at most InputLimits.max_tests_per_item


class CallCodeTruth(_Strict):
    language: Literal["python"]
    test_type: Literal["call"]
    fn_name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    tests: list[CallTest] = Field(min_length=1)  # at most InputLimits.max_tests_per_item


CodeTruth = Annotated[Union[StdioCodeTruth, CallCodeTruth], Field(discriminator="test_type")]


# Google IFEval's 25 instruction ids -> the kwargs each one needs (dataset rows carry extra keys set to None).
IFEVAL_KWARGS: dict[str, tuple[str, ...]] = {
    "keywords:existence": ("keywords",),
    "keywords:frequency": ("keyword", "frequency", "relation"),
    "keywords:forbidden_words": ("forbidden_words",),
    "keywords:letter_frequency": ("letter", "let_frequency", "let_relation"),
    "language:response_language": ("language",),
    "length_constraints:number_sentences": ("num_sentences", "relation"),
    "length_constraints:number_paragraphs": ("num_paragraphs",),
    "length_constraints:number_words": ("num_words", "relation"),
    "length_constraints:nth_paragraph_first_word": ("num_paragraphs", "nth_paragraph", "first_word"),
    "detectable_content:number_placeholders": ("num_placeholders",),
    "detectable_content:postscript": ("postscript_marker",),
    "detectable_format:number_bullet_lists": ("num_bullets",),
    "detectable_format:constrained_response": (),
    "detectable_format:number_highlighted_sections": ("num_highlights",),
    "detectable_format:multiple_sections": ("section_spliter", "num_sections"),
    "detectable_format:json_format": (),
    "detectable_format:title": (),
    "combination:two_responses": (),
    "combination:repeat_prompt": ("prompt_to_repeat",),
    "startend:end_checker": ("end_phrase",),
    "change_case:capital_word_frequency": ("capital_frequency", "capital_relation"),
    "change_case:english_capital": (),
    "change_case:english_lowercase": (),
    "punctuation:no_comma": (),
    "startend:quotation": (),
}
IFEVAL_RELATIONS = ("less than", "at least")


class IFEvalTruth(_Strict):
    instruction_id_list: list[str] = Field(min_length=1)
    kwargs: list[dict[str, JsonValue] | None]  # one dict per instruction id (None or {} when it takes none)

    @model_validator(mode="after")
    def _known_and_complete(self) -> "IFEvalTruth":
        if len(self.kwargs) != len(self.instruction_id_list):
            raise ValueError(f"{len(self.instruction_id_list)} instruction ids but {len(self.kwargs)} kwargs dicts")
        for instruction_id, kwargs in zip(self.instruction_id_list, self.kwargs):
            if instruction_id not in IFEVAL_KWARGS:
                raise ValueError(f"unknown IFEval instruction id {instruction_id!r}")
            given = {k for k, v in (kwargs or {}).items() if v is not None}
            missing = set(IFEVAL_KWARGS[instruction_id]) - given
            if missing:
                raise ValueError(f"{instruction_id} needs kwargs {sorted(missing)}")
            for key in ("relation", "let_relation", "capital_relation"):
                if key in IFEVAL_KWARGS[instruction_id] and kwargs[key] not in IFEVAL_RELATIONS:
                    raise ValueError(f"{instruction_id}: {key} must be one of {IFEVAL_RELATIONS}")
        return self


class _ItemBase(_Strict):
    response: str
    prompt: str | None = None


class MathItem(_ItemBase):
    reward_type: Literal["math"]
    ground_truth: str


class CodeItem(_ItemBase):
    reward_type: Literal["code"]
    ground_truth: CodeTruth


class IFEvalItem(_ItemBase):
    reward_type: Literal["ifeval"]
    ground_truth: IFEvalTruth
    prompt: str


class RMItem(_ItemBase):
    reward_type: Literal["rm"]
    ground_truth: JsonValue = None  # optional reference answer handed to the judge
    prompt: str


ScoreItem = Annotated[Union[MathItem, CodeItem, IFEvalItem, RMItem], Field(discriminator="reward_type")]
REWARD_TYPES = ("math", "code", "ifeval", "rm")


class RMScores(BaseModel):
    """What a reward-model backend returns (the scores API of an HTTP reward-model server answers this too)."""

    model_config = ConfigDict(allow_inf_nan=False)

    helpfulness: float
    correctness: float
    coherence: float


class ScoreBatchRequest(_Strict):
    items: list[ScoreItem]  # at most InputLimits.max_batch_items


class Verdict(BaseModel):
    """What a verifier returns: the score and the raw evidence behind it (kept beside the verdict)."""

    score: float
    details: dict[str, Any] = Field(default_factory=dict)
    # False when the verdict may reflect the machine rather than the response (a wall-clock limit hit, which
    # an overloaded host can cause): it is returned but never cached.
    cacheable: bool = True


# ok: the verifier judged the response (score may be 0); timeout: the verifier was hard-killed, the response
# scores 0; rejected: the item exceeds an input limit (reward_server.limits), it scores 0 and `details` is its
# LimitExceeded; error: we failed (sandbox, backend, workers), score is None and must never be read as 0.
Status = Literal["ok", "timeout", "rejected", "error"]


class ScoreResult(BaseModel):
    status: Status
    score: float | None
    details: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    cached: bool = False
    cacheable: bool = True  # only "ok" results with a cacheable verdict are cached

    @model_validator(mode="after")
    def _only_verdicts_are_cacheable(self) -> "ScoreResult":
        if self.status != "ok":
            self.cacheable = False
        return self


class ScoreBatchResponse(BaseModel):
    results: list[ScoreResult]


class Job(BaseModel):
    """One item on the Redis queue. `reply_to` is the list the waiting server pops results from."""

    id: str
    reply_to: str
    item: ScoreItem
    enqueued_at: float


class JobReply(BaseModel):
    job_id: str
    result: ScoreResult
    worker_id: str


class LimitExceeded(BaseModel):
    """Which input limit a request or an item exceeds: the detail of a 413, the details of a rejected item."""

    field: str  # "body", "items", "response", "prompt", "ground_truth", "ground_truth.tests", "ground_truth.tests[3]"
    limit: int  # the configured maximum (reward_server.limits.InputLimits)
    actual: int | None = None  # the size found; None for a body refused before it was all read
    unit: Literal["bytes", "items", "tests"]

    def message(self) -> str:
        found = f"{self.actual} {self.unit}" if self.actual is not None else f"over {self.limit} {self.unit}"
        return f"{self.field} is {found}; the limit is {self.limit} {self.unit}"


class ErrorBody(BaseModel):
    error: str
    detail: Any = None
