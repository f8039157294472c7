"""Verifier registry: `@register("math")` puts a Verifier class under its reward_type; unknown names raise.

A verifier is pure and synchronous (`verify(item) -> Verdict`); it raises `InfraError` when *we* failed
(sandbox broken, backend down) so that the failure is reported and retried, never scored 0.
"""

from typing import Callable, Protocol

from reward_server.types import ScoreItem, Verdict


class InfraError(RuntimeError):
    """The verifier could not judge the response for a reason that is not the response's fault."""


class Verifier(Protocol):
    def verify(self, item: ScoreItem) -> Verdict: ...

    def hard_timeout_s(self, item: ScoreItem) -> float:
        """Wall-clock budget after which the worker kills the process running `verify`."""
        ...


VERIFIERS: dict[str, type] = {}


def register(name: str) -> Callable[[type], type]:
    def decorator(cls: type) -> type:
        if name in VERIFIERS and VERIFIERS[name] is not cls:
            raise ValueError(f"verifier {name!r} already registered: {VERIFIERS[name]} vs {cls}")
        VERIFIERS[name] = cls
        return cls

    return decorator


def get_verifier_cls(name: str) -> type:
    _import_builtin()
    if name not in VERIFIERS:
        raise ValueError(f"unknown verifier {name!r}; known: {sorted(VERIFIERS)}")
    return VERIFIERS[name]


def _import_builtin() -> None:
    # Imported lazily so that a worker pays for torch (rm) only when it builds that verifier.
    from reward_server.verifiers import code, ifeval, math, rm  # noqa: F401


def build_verifiers(settings) -> dict:
    """One instance of every registered verifier, keyed by reward_type."""
    _import_builtin()
    return {name: cls(settings) for name, cls in VERIFIERS.items()}
