"""Device-state probes: a real snapshot of this Linux box, a captured sysfs tree with cpufreq and thermal
zones (this VM has neither), and the flags compare() raises for before/after pairs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent import probes


def test_snapshot_of_this_box_has_the_basics() -> None:
    # (its cost, which lands before and after every benchmark, is measured by make bench: agent_overhead)
    snap = probes.snapshot()
    for key in ("time", "cpu_model", "cores", "python", "loadavg", "mem_total_mb", "mem_available_mb", "rss_mb",
                "peak_rss_mb", "probe_ms"):
        assert key in snap, key
    assert snap["cores"] >= 1 and len(snap["loadavg"]) == 3
    assert 0 < snap["mem_available_mb"] <= snap["mem_total_mb"]
    assert 1 < snap["rss_mb"] < 4096 and snap["cpu_model"]
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


THERMALSERVICE = """IsStatusOverride: false
ThermalEventListeners:
	callbacks: 1
Thermal Status: 2
Cached temperatures:
	Temperature{mValue=30.1, mType=0, mName=CPU0, mStatus=0}
HAL Ready: true
HAL connection:
	ThermalHAL 2.0 connected: yes
Current temperatures from HAL:
	Temperature{mValue=41.5, mType=0, mName=cpu-0-0-usr, mStatus=0}
	Temperature{mValue=38.25, mType=1, mName=gpu0-usr, mStatus=0}
	Temperature{mValue=33.0, mType=2, mName=battery, mStatus=0}
Current cooling devices from HAL:
	CoolingDevice{mValue=0, mType=2, mName=cpu-cluster0}
"""


def test_android_thermalservice_parsing_feeds_compare() -> None:
    got = probes.parse_thermalservice(THERMALSERVICE)
    assert got == {"thermal_status": 2, "temps_c": {"cpu-0-0-usr": 41.5, "gpu0-usr": 38.25, "battery": 33.0}}
    cool = {"android": {"thermal_status": 0, "temps_c": {"cpu-0-0-usr": 35.0}}}
    assert probes.compare(cool, {"android": got}) == ["temp-rose", "throttled"]
    assert probes.parse_thermalservice("") == {}


def test_jetson_gpu_clock_from_devfreq(tmp_path: Path) -> None:
    d = tmp_path / "sys/class/devfreq/17000000.ga10b"  # Orin's GPU node name
    d.mkdir(parents=True)
    (d / "cur_freq").write_text("918000000\n")
    (tmp_path / "sys/class/devfreq/3d00000.host1x").mkdir(parents=True)  # not a GPU: ignored
    assert probes.jetson(str(tmp_path)).get("gpu_cur_mhz") == 918


def test_raspberry_pi_vcgencmd_parsing() -> None:
    ok = probes.parse_vcgencmd("throttled=0x0", "temp=48.3'C")
    assert ok["throttled_bits"] == "0x0" and not ok["throttled_now"] and ok["soc_temp_c"] == 48.3
    # 0x50005: under-voltage and throttled now, both also since boot
    bad = probes.parse_vcgencmd("throttled=0x50005", "temp=82.0'C")
    assert bad["undervoltage_now"] and bad["throttled_now"] and not bad["freq_capped_now"]
    assert bad["throttled_since_boot"] and bad["soc_temp_c"] == 82.0
    assert probes.compare({"rpi": ok}, {"rpi": bad}) == ["temp-rose", "hot", "throttled"]
    assert probes.parse_vcgencmd("", "") == {} and probes.parse_vcgencmd("throttled=zz", "temp=?") == {}


def test_jetson_nvpmodel_parsing() -> None:
    assert probes.parse_nvpmodel("NV Power Mode: MAXN\n0\n") == {"power_mode": "MAXN", "power_mode_id": 0}
    assert probes.parse_nvpmodel("NV Power Mode: 15W\n2") == {"power_mode": "15W", "power_mode_id": 2}


def test_an_arm_userland_on_an_x86_cpu_is_flagged_emulated(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    x86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R)\nflags\t\t: fpu sse2\n"
    arm = "processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd crc32\nCPU implementer\t: 0x41\n"
    (tmp_path / "proc" / "cpuinfo").write_text(x86)
    assert probes.emulation(str(tmp_path), machine="aarch64") == "qemu-user"
    assert probes.emulation(str(tmp_path), machine="x86_64") is None
    (tmp_path / "proc" / "cpuinfo").write_text(arm)
    assert probes.emulation(str(tmp_path), machine="aarch64") is None
    assert probes.compare({}, {"emulated": "qemu-user"}) == ["emulated(qemu-user)"]


def test_busy_counts_other_processes_cpu_not_our_own() -> None:
    def snap(busy, total, own):
        return {"cores": 4, "cpu_ticks": {"busy": busy, "total": total, "self": own}}
    # 400 ticks of machine time (4 cores x 100): we used 100, nothing else ran
    assert probes.compare(snap(1000, 10000, 50), snap(1100, 10400, 150), own_threads=1) == []
    # a stale 1-minute load average from our own earlier runs no longer matters
    quiet = snap(1000, 10000, 50) | {"loadavg": [3.9, 0, 0]}
    assert probes.compare(quiet, snap(1100, 10400, 150) | {"loadavg": [3.9, 0, 0]}) == []
    # another process took 200 ticks of the 400: two cores' worth
    assert probes.compare(snap(1000, 10000, 50), snap(1300, 10400, 150)) == ["busy(others used 2.0 cores)"]


def test_cpu_ticks_see_a_real_busy_neighbour() -> None:
    import subprocess
    import sys

    before = probes.snapshot()
    burner = subprocess.Popen([sys.executable, "-c", "import time\nt=time.time()\nwhile time.time()-t<1.0: pass"])
    burner.wait()
    after = probes.snapshot()
    assert {"busy", "total", "self"} <= set(before["cpu_ticks"])
    assert probes.other_cores(before, after) > 0.4  # the burner had about one core for the whole second


def test_jetson_power_mode_and_gpu_clock_moves_are_flagged() -> None:
    before = {"jetson": {"power_mode": "MAXN", "gpu_cur_mhz": 1300}}
    assert probes.compare(before, {"jetson": {"power_mode": "MAXN", "gpu_cur_mhz": 1290}}) == []
    assert probes.compare(before, {"jetson": {"power_mode": "15W", "gpu_cur_mhz": 612}}) == [
        "power-mode-changed", "gpu-freq-changed"]
