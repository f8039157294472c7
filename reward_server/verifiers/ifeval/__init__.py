"""IFEval (strict): 1.0 only if every listed instruction is followed by the answer part of the response."""

from reward_server.config import WorkerSettings
from reward_server.types import IFEVAL_KWARGS, IFEvalItem, Verdict
from reward_server.verifiers import register
from reward_server.verifiers.ifeval.checks import CHECKS
from reward_server.verifiers.math import answer_part

IFEVAL_TIMEOUT_S = 30.0


def check_kwargs(instruction_id: str, kwargs: dict) -> dict:
    """The kwargs `instruction_id` takes (IFEvalTruth validated that they are all there)."""
    return {k: kwargs[k] for k in IFEVAL_KWARGS[instruction_id]}


@register("ifeval")
class IFEvalVerifier:
    def __init__(self, settings: WorkerSettings):
        self.settings = settings

    def hard_timeout_s(self, item: IFEvalItem) -> float:
        return IFEVAL_TIMEOUT_S

    def verify(self, item: IFEvalItem) -> Verdict:
        response = answer_part(item.response)
        truth = item.ground_truth
        followed = []
        for instruction_id, kwargs in zip(truth.instruction_id_list, truth.kwargs):
            ok = bool(response.strip()) and CHECKS[instruction_id](
                response, **check_kwargs(instruction_id, kwargs or {})
            )
            followed.append(ok)
        return Verdict(score=1.0 if all(followed) else 0.0, details={"followed": followed})
