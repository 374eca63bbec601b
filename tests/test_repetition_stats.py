"""Between-run statistics (host.stats) on synthetic hierarchical data with a known between-run variance:
each simulated deploy is k repetitions whose centres scatter around the true median (between-run
noise, plus a drift shared by everything measured in the same round), each repetition a few hundred
latency samples around its centre (within-run noise). Coverage, false alarms and power are measured
here with fixed seeds; the real-machine figures are in make bench (bench/rerun_bench.py)."""

from __future__ import annotations

import numpy as np
import pytest

from agent.bench import median_ci as within_run_ci
from host.schedule import interleaved_order
from host.stats.order import binom_coverage, median_ci
from host.stats.paired import MIN_EFFECT, paired_speedup, significance
from host.stats.repetitions import UNSTABLE_CV, between_run_cv, summarize_repetitions, unstable_flag

TRUE_MS = 2.0
BETWEEN_SD = 0.05     # log-scale sd of a repetition's centre: ~5 % between processes
WITHIN_SD = 0.10      # log-scale sd of single samples inside one repetition


def _repetition(rng, centre: float, n: int = 300) -> np.ndarray:
    return centre * np.exp(rng.normal(0.0, WITHIN_SD, n))


def _deploy(rng, k: int, true_ms: float = TRUE_MS, drift=None) -> list[np.ndarray]:
    drift = np.zeros(k) if drift is None else drift
    return [_repetition(rng, true_ms * np.exp(rng.normal(0.0, BETWEEN_SD) + drift[r])) for r in range(k)]


def test_order_statistic_levels_are_exact_and_named():
    assert binom_coverage(5, 1) == pytest.approx(1 - 2 / 32)
    ci = median_ci([3.0, 1.0, 5.0, 2.0, 4.0])
    assert (ci.lo, ci.hi, ci.level) == (1.0, 5.0, pytest.approx(0.9375))
    assert ci.label == "93.8% CI (range)"          # five values: never called a 95 % CI
    ci6 = median_ci(range(6))
    assert (ci6.lo, ci6.hi) == (0, 5) and ci6.level == pytest.approx(1 - 2 / 64) and ci6.label == "97% CI"
    ci20 = median_ci(range(20))                    # j = 6: P(Binom(20,.5) <= 5) = 0.0207 -> level 0.9586
    assert (ci20.lo, ci20.hi) == (5, 14) and ci20.level == pytest.approx(0.9586, abs=1e-4)
    assert median_ci([]) is None and median_ci([1.0]).label == "no CI"


def test_between_run_ci_covers_the_true_median_where_the_within_run_ci_does_not():
    rng = np.random.default_rng(11)
    trials, between_hits, within_hits = 400, 0, 0
    for _ in range(trials):
        reps = _deploy(rng, 5)
        s = summarize_repetitions([float(np.median(r)) for r in reps])
        between_hits += s["ci"][0] <= TRUE_MS <= s["ci"][1]
        lo, hi = within_run_ci(np.concatenate(reps))
        within_hits += lo <= TRUE_MS <= hi
    # exact level of [min, max] of 5 medians: 93.75 %; sd of the estimate over 400 trials ~1.2 %
    assert 0.90 <= between_hits / trials <= 0.97, between_hits / trials
    # pooled samples of one deploy know nothing of the between-run spread: far below 95 %
    assert within_hits / trials < 0.6, within_hits / trials


def test_a_rerun_lands_in_the_previous_runs_rerun_interval():
    rng = np.random.default_rng(12)
    runs = [summarize_repetitions([float(np.median(r)) for r in _deploy(rng, 5)]) for _ in range(801)]
    in_rerun = [a["rerun"][0] <= b["p50"] <= a["rerun"][1] for a, b in zip(runs, runs[1:])]
    in_ci = [a["ci"][0] <= b["p50"] <= a["ci"][1] for a, b in zip(runs, runs[1:])]
    assert np.mean(in_rerun) >= 0.92, np.mean(in_rerun)
    # the CI of the median is about the true median, not the next estimate: it holds a rerun less often
    assert 0.75 <= np.mean(in_ci) < np.mean(in_rerun), np.mean(in_ci)


def _pair(rng, k: int, ratio: float, drift_sd: float) -> dict:
    """Two artifacts in k interleaved rounds; a drift shared by both within a round (the machine's state)."""
    drift = rng.normal(0.0, drift_sd, k)
    a = [float(np.median(r)) for r in _deploy(rng, k, TRUE_MS, drift)]
    b = [float(np.median(r)) for r in _deploy(rng, k, TRUE_MS / ratio, drift)]
    sa, sb = summarize_repetitions(a), summarize_repetitions(b)
    return paired_speedup(dict(enumerate(a)), dict(enumerate(b)), sa["p50"], sb["p50"], sa["ci"], sb["ci"])


def test_identical_artifacts_are_rarely_called_different_even_under_drift():
    rng = np.random.default_rng(13)
    trials = 600
    calls = [significance(_pair(rng, 5, 1.0, drift_sd=0.15)["ci"]) for _ in range(trials)]
    # without a noise floor the sign-test interval errs 2/32 = 6.25 % of the time; the 3 % floor removes most
    assert sum(calls) / trials <= 0.03, sum(calls) / trials
    raw = [significance(_pair(rng, 5, 1.0, drift_sd=0.15)["ci"], floor=0.0) for _ in range(trials)]
    assert 0.03 <= sum(raw) / trials <= 0.10, sum(raw) / trials


def test_pairing_cancels_drift_that_unpaired_intervals_cannot():
    rng = np.random.default_rng(14)
    paired, unpaired = [], []
    for _ in range(300):
        sp = _pair(rng, 5, 1.3, drift_sd=0.15)
        paired.append(significance(sp["ci"]))
        # the same numbers without the pairing: interval arithmetic on the two between-run CIs
        drift = rng.normal(0.0, 0.15, 5)
        a = summarize_repetitions([float(np.median(r)) for r in _deploy(rng, 5, TRUE_MS, drift)])
        b = summarize_repetitions([float(np.median(r)) for r in _deploy(rng, 5, TRUE_MS / 1.3, drift)])
        unpaired.append(significance(paired_speedup({}, {}, a["p50"], b["p50"], a["ci"], b["ci"])["ci"]))
        assert sp["paired"] and sp["rounds"] == 5 and sp["ci"][0] <= sp["speedup"] * 1.2
    assert np.mean(paired) >= 0.95, np.mean(paired)       # a real 1.3x is found in >= 19 of 20
    assert np.mean(unpaired) < 0.5, np.mean(unpaired)     # 15 % drift swamps it without the pairing


def test_significance_needs_the_whole_ci_beyond_the_floor():
    assert significance([1.05, 1.4]) is True and significance([0.6, 0.9]) is True
    assert significance([0.98, 1.4]) is False               # includes 1
    assert significance([1.01, 1.4]) is False               # reaches into the 3 % floor
    assert significance([1.04, 1.4], floor=0.05) is False   # a noisier device's floor
    assert significance(None) is None and MIN_EFFECT == 0.03


def test_cv_and_unstable_flag():
    assert between_run_cv([1.0]) is None
    assert between_run_cv([1.0, 1.0, 1.0]) == 0.0
    cv = between_run_cv([1.0, 1.2, 0.8])
    assert cv == pytest.approx(0.2)
    assert unstable_flag(cv) == "unstable(cv=20.0%)" and unstable_flag(UNSTABLE_CV / 2) is None
    s = summarize_repetitions([1.0, 1.2, 0.8, 1.1, 0.9])
    assert s["unstable"] == "unstable(cv=15.8%)" and s["k"] == 5 and s["p50"] == 1.0


def test_interleaved_order_is_seeded_balanced_and_mixed():
    order = interleaved_order(3, 6, seed=7)
    assert len(order) == 18 and order == interleaved_order(3, 6, seed=7)
    assert order != interleaved_order(3, 6, seed=8)
    for r in range(6):                                       # every round holds each artifact once
        assert sorted(i for rr, i in order if rr == r) == [0, 1, 2]
    rounds = [tuple(i for rr, i in order if rr == r) for r in range(6)]
    assert len(set(rounds)) > 1                              # not the same order every round
    assert [r for r, _ in order] == sorted(r for r, _ in order)
