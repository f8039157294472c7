"""The step-time fit behind the makespan policy: outliers, new regimes, per-instance slowness."""

import numpy as np
import pytest

from load_balancer.estimates import StepTimeFit

THETA = np.array([0.0165, 5e-5, 3.5e-8])  # t0, a, c of a linear step model


def rounds(seed: int, n_rounds: int, instances: int = 32):
    """Scrape rounds of the linear step model: (urls, batch, context, step) per round."""
    rng = np.random.default_rng(seed)
    urls = [f"u{k}" for k in range(instances)]
    for _ in range(n_rounds):
        batch = rng.integers(1, 64, instances).astype(float)
        context = batch * rng.uniform(1_000, 30_000, instances)
        yield urls, batch, context, THETA[0] + THETA[1] * batch + THETA[2] * context


def with_stalls(seed: int, n_rounds: int):
    """The same rounds with 3 of 32 observations per round wrecked as a prefill stall or a stale rate wrecks them:
    1e3 to 1e17 s steps, and a few far too short."""
    rng = np.random.default_rng(seed + 1)
    for urls, batch, context, step in rounds(seed, n_rounds):
        step = step.copy()
        bad = rng.choice(len(step), 3, replace=False)
        step[bad[:2]] = 10.0 ** rng.uniform(3, 17, 2)
        step[bad[2]] *= 1e-3
        yield urls, batch, context, step


def fit_on(data, **options) -> StepTimeFit:
    fit = StepTimeFit(**options)
    for urls, batch, context, step in data:
        fit.observe(urls, batch, context, step)
    return fit


def test_stalled_intervals_do_not_move_the_fit():
    reference = fit_on(rounds(0, 200)).coefficients()  # the same fit on the clean observations alone
    np.testing.assert_allclose(reference, THETA, rtol=0.02)
    np.testing.assert_allclose(fit_on(with_stalls(0, 200)).coefficients(), reference, rtol=1e-6)
    unguarded = fit_on(with_stalls(0, 200), outlier_factor=np.inf).coefficients()
    assert unguarded[0] > 1e6 * reference[0]  # what the guard is for: one 1e17 s sample owns an unguarded fit


def test_first_round_and_a_wrong_prior_are_judged_by_the_round_itself():
    """Before the fit holds data its prediction is only the prior: a round is judged by its own median, so a prior
    50x off (a small model on CPU, a large one on old GPUs) does not keep every real observation out."""
    fit = fit_on(with_stalls(1, 100), prior=(1.0, 0.0, 0.0))
    np.testing.assert_allclose(fit.coefficients(), THETA, rtol=0.02)


def test_a_cluster_that_really_slowed_down_is_learnt():
    fit = fit_on(rounds(2, 100))
    for urls, batch, context, step in rounds(3, 300):
        kept = fit.observe(urls, batch, context, 10.0 * step)  # every instance 10x slower from now on
    assert kept.all()
    np.testing.assert_allclose(fit.coefficients(), 10.0 * THETA, rtol=0.02)


def test_slowness_finds_the_slow_instance_whatever_its_load():
    fit = StepTimeFit()
    for urls, batch, context, step in rounds(4, 400, instances=8):
        fit.observe(urls, batch, context, step * np.where(np.array(urls) == "u3", 2.0, 1.0))
    assert fit.slowness("u3") == pytest.approx(2.0, rel=0.05)
    assert all(fit.slowness(f"u{k}") == pytest.approx(1.0, abs=0.02) for k in range(8) if k != 3)
    assert fit.slowness("never-seen") == 1.0


def test_non_finite_and_non_positive_steps_are_dropped():
    fit = StepTimeFit()
    kept = fit.observe(["a", "b", "c", "d"], [4, 4, 4, 4], [1e4, 1e4, 1e4, 1e4], [np.inf, np.nan, 0.0, 0.02])
    assert kept.tolist() == [False, False, False, True]
    assert np.all(np.isfinite(fit.coefficients()))
