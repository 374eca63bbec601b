"""Speed-ups, their CIs and significance, and accuracy drops for the report's rows.

Speed-up: FP32 of the same model on the same device, runtime and threads over this row, as a ratio of
the two between-run medians. Its CI comes from the rounds both artifacts shared in one interleaved
deploy (host.stats.paired); significant only when that whole CI lies beyond the device's noise floor
(the floor `host noise` measured on the device, at least 3 %). A row with a single repetition on
either side has no between-run information: it gets a speed-up but no significance, never one
computed from samples of one process (that is what made identical artifacts "differ" by 1-7 %).
"""

from __future__ import annotations

from typing import Any, Optional

from host.stats.paired import MIN_EFFECT, paired_speedup, significance


def noise_floor(noise: Optional[dict[str, Any]]) -> float:
    """The relative difference below which a speed-up is not called, for a device."""
    cv = (noise or {}).get("cv")
    return max(MIN_EFFECT, float(cv)) if isinstance(cv, (int, float)) else MIN_EFFECT


def baseline(row: dict[str, Any], rows: list[dict[str, Any]], need: str) -> Optional[dict[str, Any]]:
    """The FP32 row for `row`: same device, model and platform, and (for latency) the same runtime
    and threads; for accuracy, the same data set and sample count (else the drop compares two
    different exams), with an FP32 evaluation on another platform as a fallback the row names."""
    fp32 = [r for r in rows if r["method"] == "fp32" and r["target"] == row["target"]
            and r["model_name"] == row["model_name"] and r[need] is not None]
    if need == "accuracy":
        fp32 = [r for r in fp32 if (r["dataset"], r["eval_n"]) == (row["dataset"], row["eval_n"])]
    same = [r for r in fp32 if r["platform"] == row["platform"]]
    if need == "p50":
        same = [r for r in same if r["runtime"] == row["runtime"] and r["threads"] == row["threads"]]
        return same[0] if same else None
    return (same or fp32 or [None])[0]


def compare(rows: list[dict[str, Any]], noise_by_target: dict[str, dict[str, Any]]) -> None:
    """Fill baseline, speedup, speedup_ci, significant, unstable, acc_drop, acc_baseline on every row."""
    for r in rows:
        r["noise_floor"] = noise_floor(noise_by_target.get(r["target"]))
        base = baseline(r, rows, "p50") if r["p50"] is not None else None
        if base is not None and r["p50"]:
            r["baseline"] = base["artifact"]
            both_repeated = r["repeats"] >= 2 and base["repeats"] >= 2
            sp = paired_speedup(base["rep_rounds"], r["rep_rounds"], base["p50"], r["p50"],
                                [base["ci_lo"], base["ci_hi"]] if both_repeated else None,
                                [r["ci_lo"], r["ci_hi"]] if both_repeated else None)
            r["speedup"] = sp["speedup"]
            if base is not r:
                r["speedup_ci"], r["speedup_ci_label"], r["paired_rounds"] = sp["ci"], sp["ci_label"], sp["rounds"]
                r["speedup_ci_lo"], r["speedup_ci_hi"] = sp["ci"] or (None, None)
                r["significant"] = significance(sp["ci"], r["noise_floor"]) if both_repeated else None
            # a side whose median never settled, or whose repetitions disagree, makes the ratio unreliable
            r["unstable"] = any(f.startswith(("ci-not-reached", "unstable")) for f in r["flags"] + base["flags"])
        abase = baseline(r, rows, "accuracy") if r["accuracy"] is not None else None
        if abase is not None:
            r["acc_drop"] = 100.0 * (abase["accuracy"] - r["accuracy"])
            if abase["platform"] != r["platform"]:
                # no FP32 of this platform was evaluated on this exam: say which one the drop is against
                r["acc_baseline"] = f"{abase['platform']} fp32"
        # an FP32 row never evaluated has no drop: it is not "0.0", and cannot win the accuracy budget
