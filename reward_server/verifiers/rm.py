"""Reward model: a pluggable scorer of helpfulness, correctness and coherence; the reward is their mean.

Backends (WorkerSettings.rm_backend):
- "hf": a local Hugging Face sequence-classification model with three outputs (its raw head values, in the
  order helpfulness, correctness, coherence), loaded once per verifier process;
- "http": `rm_api="scores"` posts {"prompt", "response", "reference"} to `rm_url` and reads the three numbers;
  `rm_api="openai"` asks an OpenAI-compatible chat endpoint to grade 0-10 as JSON and scales to 0-1.
A backend that is down or answers nonsense raises InfraError: the item is reported as an error, never a 0.
"""

import json
import logging
import re

import httpx

from reward_server.config import WorkerSettings
from reward_server.types import RMItem, RMScores, Verdict
from reward_server.verifiers import InfraError, register
from reward_server.verifiers.math import answer_part

logger = logging.getLogger(__name__)

ASPECTS = ("helpfulness", "correctness", "coherence")
LOAD_BUDGET_S = 60.0  # first call in a fresh verifier process loads the model
JUDGE_PROMPT = (
    "Grade the assistant's response to the user's prompt. Reply with only a JSON object with integer fields "
    '"helpfulness", "correctness" and "coherence", each from 0 to 10.\n\n[Prompt]\n{prompt}\n\n'
    "[Reference answer]\n{reference}\n\n[Response]\n{response}"
)


class HFBackend:
    def __init__(self, path: str):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self._torch = torch
        torch.set_num_threads(1)  # one verifier process per worker: workers, not threads, carry the parallelism
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(path).eval()
        if self.model.config.num_labels != len(ASPECTS):
            raise InfraError(f"reward model at {path} has {self.model.config.num_labels} outputs, need {len(ASPECTS)}")

    def score(self, prompt: str, response: str, reference: object) -> RMScores:
        limit = getattr(self.tokenizer, "model_max_length", 4096)
        enc = self.tokenizer(prompt, response, truncation=True, max_length=min(limit, 8192), return_tensors="pt")
        with self._torch.inference_mode():
            logits = self.model(**enc).logits[0].float()  # (3,)
        return RMScores(**dict(zip(ASPECTS, logits.tolist())))


class HTTPBackend:
    def __init__(self, settings: WorkerSettings):
        if not settings.rm_url:
            raise InfraError("rm_backend=http needs rm_url")
        self.settings = settings
        self.http = httpx.Client(timeout=settings.rm_timeout_s)

    def score(self, prompt: str, response: str, reference: object) -> RMScores:
        try:
            if self.settings.rm_api == "scores":
                r = self.http.post(
                    self.settings.rm_url, json={"prompt": prompt, "response": response, "reference": reference}
                )
                r.raise_for_status()
                return RMScores.model_validate(r.json())
            return self._judge(prompt, response, reference)
        except (httpx.HTTPError, ValueError) as e:  # pydantic's ValidationError is a ValueError
            raise InfraError(f"reward model endpoint {self.settings.rm_url}: {type(e).__name__}: {e}") from e

    def _judge(self, prompt: str, response: str, reference: object) -> RMScores:
        content = JUDGE_PROMPT.format(
            prompt=prompt, reference=reference if reference is not None else "(none)", response=response
        )
        body = {
            "model": self.settings.rm_model or "judge",
            "temperature": 0.0,
            "messages": [{"role": "user", "content": content}],
        }
        r = self.http.post(self.settings.rm_url, json=body)
        r.raise_for_status()
        text = r.json()["choices"][0]["message"]["content"]
        match = re.search(r"\{.*\}", text, flags=re.DOTALL)
        if match is None:
            raise ValueError(f"judge reply has no JSON object: {text[:200]!r}")
        grades = json.loads(match.group(0))
        return RMScores(**{aspect: float(grades[aspect]) / 10.0 for aspect in ASPECTS})


@register("rm")
class RMVerifier:
    def __init__(self, settings: WorkerSettings):
        self.settings = settings
        self._backend = None  # built on first use, inside the verifier process

    def hard_timeout_s(self, item: RMItem) -> float:
        return self.settings.rm_timeout_s + LOAD_BUDGET_S

    def _get_backend(self):
        if self._backend is None:
            if self.settings.rm_backend == "hf":
                if not self.settings.rm_model:
                    raise InfraError("rm_backend=hf needs rm_model (a local model path)")
                try:
                    self._backend = HFBackend(self.settings.rm_model)
                except OSError as e:
                    raise InfraError(f"cannot load reward model {self.settings.rm_model}: {e}") from e
            elif self.settings.rm_backend == "http":
                self._backend = HTTPBackend(self.settings)
            else:
                raise InfraError("no reward-model backend configured (WorkerSettings.rm_backend is 'none')")
        return self._backend

    def verify(self, item: RMItem) -> Verdict:
        scores = self._get_backend().score(item.prompt, answer_part(item.response), item.ground_truth)
        mean = sum(getattr(scores, a) for a in ASPECTS) / len(ASPECTS)
        return Verdict(score=mean, details=scores.model_dump())
