"""Device-state probes: a real snapshot of this Linux box, a captured sysfs tree with cpufreq and thermal
zones (this VM has neither), and the flags compare() raises for before/after pairs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from agent import probes


def test_snapshot_of_this_box_has_the_basics_and_is_fast() -> None:
    probes.snapshot()  # first call pays for imports/which() lookups
    t0 = time.perf_counter()
    snap = probes.snapshot()
    elapsed_ms = (time.perf_counter() - t0) * 1000
    for key in ("time", "cpu_model", "cores", "python", "loadavg", "mem_total_mb", "mem_available_mb", "rss_mb",
                "peak_rss_mb", "probe_ms"):
        assert key in snap, key
    assert snap["cores"] >= 1 and len(snap["loadavg"]) == 3
    assert 0 < snap["mem_available_mb"] <= snap["mem_total_mb"]
    assert 1 < snap["rss_mb"] < 4096 and snap["cpu_model"]
    assert elapsed_ms < 500, elapsed_ms  # generous: a shared 2-core box; typical is a few ms
    json.dumps(snap)  # travels as env_json


def _fake_sys(root: Path, freqs: list[int], temps: dict[str, int], governor: str = "schedutil") -> str:
    for i, khz in enumerate(freqs):
        d = root / f"sys/devices/system/cpu/cpu{i}/cpufreq"
        d.mkdir(parents=True, exist_ok=True)
        (d / "scaling_governor").write_text(governor + "\n")
        (d / "scaling_cur_freq").write_text(f"{khz}\n")
        (d / "scaling_min_freq").write_text("600000\n")
        (d / "scaling_max_freq").write_text("1800000\n")
    for i, (name, milli) in enumerate(temps.items()):
        d = root / f"sys/class/thermal/thermal_zone{i}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "type").write_text(name + "\n")
        (d / "temp").write_text(f"{milli}\n")
    (root / "proc").mkdir(exist_ok=True)
    (root / "proc/loadavg").write_text("0.10 0.20 0.30 1/100 999\n")
    (root / "proc/meminfo").write_text("MemTotal:  3884000 kB\nMemFree: 100 kB\nMemAvailable:  2048000 kB\n")
    (root / "proc/cpuinfo").write_text("processor\t: 0\nmodel name\t: Cortex-A72\nHardware\t: BCM2835\n")
    return str(root)


def test_snapshot_reads_cpufreq_and_thermal_zones(tmp_path: Path) -> None:
    root = _fake_sys(tmp_path, [1800000, 1500000], {"cpu-thermal": 47250, "gpu-thermal": 45000})
    snap = probes.snapshot(root)
    assert snap["governor"] == "schedutil"
    assert snap["cpufreq"]["cpu0"] == {"governor": "schedutil", "cur_khz": 1800000, "min_khz": 600000,
                                       "max_khz": 1800000}
    assert snap["cpufreq"]["cpu1"]["cur_khz"] == 1500000
    assert snap["temps_c"] == {"cpu-thermal": pytest.approx(47.25, abs=0.051), "gpu-thermal": 45.0}
    assert snap["loadavg"] == [0.1, 0.2, 0.3] and snap["mem_total_mb"] == 3792 and snap["mem_available_mb"] == 2000
    assert snap["cpu_model"] == "Cortex-A72"
    facts = probes.device_facts(root)
    assert facts["governors"] == ["schedutil"] and facts["max_khz"] == 1800000
    assert facts["thermal_zones"] == ["cpu-thermal", "gpu-thermal"] and facts["cpu_model"] == "Cortex-A72"


def test_compare_flags_frequency_temperature_and_load(tmp_path: Path) -> None:
    before = probes.snapshot(_fake_sys(tmp_path / "a", [1800000, 1800000], {"cpu": 50000}))
    assert probes.compare(before, before) == []
    same = probes.snapshot(_fake_sys(tmp_path / "b", [1750000, 1800000], {"cpu": 54000}))  # -2.8%, +4 C
    assert probes.compare(before, same) == []
    slowed = probes.snapshot(_fake_sys(tmp_path / "c", [1800000, 1200000], {"cpu": 50000}))
    assert probes.compare(before, slowed) == ["freq-changed"]
    warmer = probes.snapshot(_fake_sys(tmp_path / "d", [1800000, 1800000], {"cpu": 56000}))
    assert probes.compare(before, warmer) == ["temp-rose"]
    hot = probes.snapshot(_fake_sys(tmp_path / "e", [1800000, 1800000], {"cpu": 83000}))
    assert probes.compare(before, hot) == ["temp-rose", "hot"]
    gov = probes.snapshot(_fake_sys(tmp_path / "f", [1800000, 1800000], {"cpu": 50000}, governor="powersave"))
    assert probes.compare(before, gov) == ["governor-changed"]


@pytest.mark.parametrize("load_before, load_after, cores, busy", [
    (0.2, 1.1, 4, False),   # our own single-threaded worker accounts for the rise
    (3.5, 3.0, 4, True),    # something else was running before we started
    (0.2, 4.5, 4, True),    # ...or started during the run
    (0.9, 1.5, 2, False),
])
def test_compare_busy_discounts_own_threads(load_before: float, load_after: float, cores: int, busy: bool) -> None:
    before = {"cores": cores, "loadavg": [load_before, 0, 0]}
    after = {"cores": cores, "loadavg": [load_after, 0, 0]}
    assert ("busy" in probes.compare(before, after, own_threads=1)) is busy


def test_compare_throttling_sources() -> None:
    rpi_ok = {"rpi": {"throttled_now": False, "freq_capped_now": False, "soc_temp_c": 50.0}}
    rpi_throttled = {"rpi": {"throttled_now": True, "freq_capped_now": False, "soc_temp_c": 81.0}}
    assert probes.compare(rpi_ok, rpi_ok) == []
    assert probes.compare(rpi_ok, rpi_throttled) == ["temp-rose", "hot", "throttled"]
    assert probes.compare({}, {"android": {"thermal_status": 2}}) == ["throttled"]
    assert probes.compare({}, {"android": {"thermal_status": 1}}) == []
    assert probes.compare({}, {}) == []  # nothing known, nothing flagged


def test_device_facts_of_this_box() -> None:
    facts = probes.device_facts()
    assert facts["cores"] >= 1 and facts["machine"] and facts["python"].count(".") == 2
    assert facts["mem_total_mb"] > 0
    json.dumps(facts)
