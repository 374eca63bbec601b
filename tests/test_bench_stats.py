"""The measurement protocol's statistics and stopping rules on synthetic sample streams."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agent.bench import BenchConfig, ci_relative, flags_for, median_ci, run_protocol, summarize


def test_summary_known_percentiles():
    s = summarize(list(range(1, 101)))
    assert s["p50"] == pytest.approx(50.5) and s["p90"] == pytest.approx(90.1) and s["p99"] == pytest.approx(99.01)
    assert s["min"] == 1 and s["max"] == 100 and s["mean"] == pytest.approx(50.5)
    assert s["std"] == pytest.approx(np.std(np.arange(1, 101), ddof=1))
    assert s["ci_lo"] <= s["p50"] <= s["ci_hi"]


def test_median_ci_coverage_on_skewed_latency():
    # latency-like: shifted lognormal; true median known in closed form
    rng = np.random.default_rng(1)
    true_median = 1.0 + math.exp(0.0)
    hits = 0
    trials = 600
    for _ in range(trials):
        x = 1.0 + rng.lognormal(0.0, 0.8, size=200)
        lo, hi = median_ci(x)
        hits += lo <= true_median <= hi
    assert 0.92 <= hits / trials <= 0.985


def test_median_ci_uses_the_textbook_order_statistics():
    # n=50, z=1.96: j = floor(25 - 6.93) = 18, k = ceil(1 + 25 + 6.93) = 33 -> x_(18), x_(33) = s[17], s[32]
    x = np.arange(1.0, 51.0)
    assert median_ci(np.random.default_rng(0).permutation(x)) == (18.0, 33.0)


def test_median_ci_coverage_at_n50_is_binomial_exact():
    # For n=50 the exact coverage of [x_(18), x_(33)] is P(18 <= Binom(50, .5) <= 32) = 0.967; an interval one
    # rank narrower at either end covers only ~0.951, i.e. below the 95 % it claims. 10000 trials (sd ~0.002,
    # fixed seed) put the right ranks at 0.967 and the off-by-one ones at 0.952, well apart from the band.
    rng = np.random.default_rng(1)
    x = 1.0 + rng.lognormal(0.0, 0.8, size=(10000, 50))
    true_median = 2.0
    cis = np.array([median_ci(row) for row in x])
    coverage = float(np.mean((cis[:, 0] <= true_median) & (true_median <= cis[:, 1])))
    assert 0.959 <= coverage <= 0.976, coverage


def test_zero_options_are_values_not_unset():
    # 0 means "off" / "none" for these; only a missing key (an unset proto3 optional) takes the default
    c = BenchConfig.from_options({"runs": 5, "min_seconds": 0.0, "warmup_runs": 0, "warmup_seconds": 0.0,
                                  "target_ci": 0.0})
    assert (c.runs, c.min_seconds, c.warmup_runs, c.warmup_seconds, c.target_ci) == (5, 0.0, 0, 0.0, 0.0)
    d = BenchConfig.from_options({"threads": 0, "sample_batch": 0})
    assert d == BenchConfig()
    dev = FakeDevice(np.full(10**6, 1.0))
    s = run_protocol(dev.infer, [None], c, lambda k, p: None, clock=dev.clock)
    assert s["warmup_runs"] == 0 and s["runs"] == 5 and s["stop_reason"] == "runs-and-min-seconds"


def test_ci_narrows_with_more_samples():
    rng = np.random.default_rng(2)
    x = 5 + rng.exponential(0.5, size=10000)
    assert ci_relative(x[:100]) > ci_relative(x[:1000]) > ci_relative(x)
    assert ci_relative([1.0, 2.0]) == math.inf


class FakeDevice:
    """infer() advances a virtual clock by the next latency from a stream: the protocol sees exact times."""

    def __init__(self, latencies):
        self.t = 0.0
        self.it = iter(latencies)
        self.calls = 0

    def clock(self) -> float:
        return self.t

    def infer(self, feed) -> None:
        self.calls += 1
        self.t += next(self.it) / 1e3


def _stream(rng, mean_ms, sd_ms, n=10**6):
    return np.abs(rng.normal(mean_ms, sd_ms, size=n)) + 0.01


def test_early_stop_once_ci_is_tight():
    dev = FakeDevice(_stream(np.random.default_rng(3), 2.0, 0.02))
    events = []
    cfg = BenchConfig(runs=50, min_seconds=0.5, max_seconds=60, warmup_runs=5, warmup_seconds=0.05, target_ci=0.01)
    s = run_protocol(dev.infer, [None], cfg, lambda k, p: events.append((k, p)), clock=dev.clock)
    assert s["stop_reason"] == "ci-reached"
    assert s["runs"] >= 50 and s["duration_s"] >= 0.5 and s["duration_s"] < 5
    assert s["ci_rel"] <= 0.01
    assert s["warmup_runs"] >= 5 and s["warmup_ms"] >= 50
    steady = [x for k, p in events if k == "samples" and p["phase"] == "steady" for x in p["latency_ms"]]
    assert len(steady) == s["runs"]  # every sample was streamed
    assert s["p50"] == pytest.approx(2.0, rel=0.02)


def test_noisy_stream_runs_to_max_seconds_and_is_flagged():
    rng = np.random.default_rng(4)
    dev = FakeDevice(rng.choice([1.0, 10.0], size=10**6))  # bimodal: the median CI cannot get within 0.1 %
    cfg = BenchConfig(runs=20, min_seconds=0.1, max_seconds=3, target_ci=0.001)
    s = run_protocol(dev.infer, [None], cfg, lambda k, p: None, clock=dev.clock)
    assert s["stop_reason"] == "max-seconds" and 3 <= s["duration_s"] < 3.02
    assert any(f.startswith("ci-not-reached") for f in flags_for(s, cfg))


def test_min_runs_and_min_seconds_both_hold():
    dev = FakeDevice(np.full(10**6, 1.0))
    cfg = BenchConfig(runs=500, min_seconds=0.1, max_seconds=60, target_ci=0.0)
    s = run_protocol(dev.infer, [None], cfg, lambda k, p: None, clock=dev.clock)
    assert s["runs"] == 500 and s["stop_reason"] == "runs-and-min-seconds"
    dev = FakeDevice(np.full(10**6, 1.0))
    cfg = BenchConfig(runs=10, min_seconds=2.0, max_seconds=60, target_ci=0.0)
    s = run_protocol(dev.infer, [None], cfg, lambda k, p: None, clock=dev.clock)
    assert 2000 <= s["runs"] <= 2001


def test_inputs_rotate():
    seen = []
    dev = FakeDevice(np.full(10**6, 1.0))

    def infer(feed):
        seen.append(feed)
        dev.infer(feed)

    run_protocol(infer, ["a", "b", "c"], BenchConfig(runs=30, min_seconds=0, target_ci=0, warmup_runs=2,
                                                     warmup_seconds=0), lambda k, p: None, clock=dev.clock)
    assert set(seen) == {"a", "b", "c"} and seen[:4] == ["a", "b", "c", "a"]


def test_a_p99_from_under_100_runs_is_flagged():
    cfg = BenchConfig(runs=20, min_seconds=0.0, target_ci=0)
    dev = FakeDevice(np.full(10**4, 1.0))
    few = run_protocol(dev.infer, [None], cfg, lambda k, p: None, clock=dev.clock)
    assert "p99-from-" + str(few["runs"]) + "-runs" in flags_for(few, cfg) and few["runs"] < 100
    many = summarize(np.full(150, 1.0)) | {"runs": 150, "stop_reason": "runs-and-min-seconds", "ci_rel": 0.0}
    assert not any(f.startswith("p99-from") for f in flags_for(many, cfg))
