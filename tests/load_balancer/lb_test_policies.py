"""Scripted routing policies for tests: they make the balancer do one thing on cue (not routing strategies)."""

from __future__ import annotations

from load_balancer.policy import Migration, register_policy


class _Quiet:
    def on_routed(self, request, url, now): ...

    def on_progress(self, request_id, generated_tokens, now): ...

    def on_finished(self, request_id, generated_tokens, now): ...

    def on_failed(self, request_id, now): ...

    def plan_migrations(self, instances, running, now):
        return []

    def estimates(self, instances, running, now):
        return {}


@register_policy("test_first")
class FirstPolicy(_Quiet):
    """Always the first healthy instance in registration order."""

    def choose(self, request, instances, now):
        return instances[0].url


@register_policy("test_move_after")
class MoveAfterPolicy(FirstPolicy):
    """Route to the first instance; move every request that has ``after`` tokens to the last one, once."""

    def __init__(self, after: int = 20) -> None:
        self.after = after
        self.moved: set[str] = set()

    def plan_migrations(self, instances, running, now):
        target = [s.url for s in instances if s.healthy][-1]
        moves = []
        for rr in running:
            if rr.generated_tokens >= self.after and rr.url != target and rr.request.request_id not in self.moved:
                self.moved.add(rr.request.request_id)
                moves.append(Migration(rr.request.request_id, rr.url, target))
        return moves


@register_policy("test_record")
class RecordPolicy(MoveAfterPolicy):
    """``test_move_after`` (by default never moving) that keeps every ``RequestInfo`` it routes and every reroute."""

    def __init__(self, after: int = 10**9) -> None:
        super().__init__(after)
        self.seen = []  # RequestInfo of each choose
        self.routed = []  # (RequestInfo, url) of each on_routed: first placements and moves

    def choose(self, request, instances, now):
        self.seen.append(request)
        return super().choose(request, instances, now)

    def on_routed(self, request, url, now):
        self.routed.append((request, url))
