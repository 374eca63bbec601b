"""Device-state probes: what a latency number needs beside it to be trusted (stdlib only).

`snapshot()` is taken before and after every benchmark (fast: /proc and /sys reads, external commands only
where their tool exists, each with a short timeout); `compare(before, after)` turns the pair into flags;
`device_facts()` is the static part for GetInfo. Every probe is silent where its source is absent, so a
key missing from a snapshot means "this device does not expose it", never an error.

All paths go through `root` so the probes can be pointed at a captured /sys tree (tests, post-mortems).
"""

from __future__ import annotations

import glob
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import time
from typing import Any, Optional

CMD_TIMEOUT_S = 0.5          # a probe command that takes longer is skipped, not waited for
FREQ_CHANGE = 0.10           # relative change of a core's current frequency that flags freq-changed
TEMP_RISE_C = 5.0
HOT_C = 80.0
BUSY_LOAD_PER_CORE = 0.5     # 1-minute load average per core (beyond our own worker) that flags busy
BUSY_OTHER_CORES = 0.5       # cores' worth of CPU used by other processes during the run that flags busy


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _int(text: Optional[str]) -> Optional[int]:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _run(args: list[str], timeout: float = CMD_TIMEOUT_S) -> Optional[str]:
    if shutil.which(args[0]) is None:
        return None
    try:
        r = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def _p(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/"))


# -- CPU -------------------------------------------------------------------------------------------
def cpu_model(root: str = "/") -> str:
    text = _read(_p(root, "/proc/cpuinfo")) or ""
    for key in ("model name", "Hardware", "Model", "cpu model", "Processor"):
        for line in text.splitlines():
            k, _, v = line.partition(":")
            if k.strip() == key and v.strip():
                return v.strip()
    return platform.processor() or platform.machine()


def emulation(root: str = "/", machine: Optional[str] = None) -> Optional[str]:
    """"qemu-user" when an ARM userland runs on an x86 CPU through binfmt (an emulated board): the
    kernel's /proc/cpuinfo then still has x86's keys, which no ARM kernel prints. Its latency says
    nothing about the real device, so every result from it must say so."""
    if (machine or platform.machine()) not in ("aarch64", "arm64", "armv7l", "armv6l"):
        return None
    text = _read(_p(root, "/proc/cpuinfo")) or ""
    return "qemu-user" if re.search(r"^(vendor_id|flags)\s*:", text, re.M) else None


def cpufreq(root: str = "/") -> dict[str, dict[str, Any]]:
    """Per core: governor, current / min / max frequency in kHz (cpufreq sysfs)."""
    cores: dict[str, dict[str, Any]] = {}
    for d in sorted(glob.glob(_p(root, "/sys/devices/system/cpu/cpu[0-9]*/cpufreq"))):
        core = os.path.basename(os.path.dirname(d))
        info: dict[str, Any] = {}
        gov = _read(os.path.join(d, "scaling_governor"))
        if gov:
            info["governor"] = gov
        for key, name in (("cur_khz", "scaling_cur_freq"), ("min_khz", "scaling_min_freq"),
                          ("max_khz", "scaling_max_freq")):
            v = _int(_read(os.path.join(d, name)))
            if v is not None:
                info[key] = v
        if info:
            cores[core] = info
    return cores


def thermal(root: str = "/") -> dict[str, float]:
    """Thermal zone type -> degrees C (sysfs reports millidegrees)."""
    temps: dict[str, float] = {}
    for d in sorted(glob.glob(_p(root, "/sys/class/thermal/thermal_zone*"))):
        milli = _int(_read(os.path.join(d, "temp")))
        if milli is None:
            continue
        name = _read(os.path.join(d, "type")) or os.path.basename(d)
        if name in temps:
            name = f"{name}-{os.path.basename(d)}"
        temps[name] = round(milli / 1000.0, 1)
    return temps


def meminfo(root: str = "/") -> dict[str, int]:
    out = {}
    for line in (_read(_p(root, "/proc/meminfo")) or "").splitlines():
        key, _, rest = line.partition(":")
        if key in ("MemTotal", "MemAvailable"):
            kb = _int(rest.strip().split()[0]) if rest.strip() else None
            if kb is not None:
                out["mem_total_mb" if key == "MemTotal" else "mem_available_mb"] = kb // 1024
    return out


def loadavg(root: str = "/") -> Optional[list[float]]:
    text = _read(_p(root, "/proc/loadavg"))
    try:
        return [float(x) for x in text.split()[:3]] if text else None
    except ValueError:
        return None


def cpu_ticks(root: str = "/") -> Optional[dict[str, int]]:
    """CPU time in clock ticks: the whole machine's busy and total (/proc/stat) and this process's own
    (/proc/self/stat). Their deltas across a run say how much CPU *other* processes took while it
    ran, which the 1-minute load average cannot: it still remembers our own previous runs."""
    stat, own = _read(_p(root, "/proc/stat")), _read(_p(root, "/proc/self/stat"))
    if not stat or not own:
        return None
    try:
        f = [int(x) for x in stat.splitlines()[0].split()[1:9]]  # user nice system idle iowait irq softirq steal
        o = own.rsplit(")", 1)[1].split()  # after "pid (comm)": state is field 3, utime/stime are 14/15
        return {"busy": sum(f) - f[3] - f[4], "total": sum(f), "self": int(o[11]) + int(o[12])}
    except (ValueError, IndexError):
        return None


def other_cores(before: dict[str, Any], after: dict[str, Any]) -> Optional[float]:
    """Cores' worth of CPU that processes other than the measuring one used between two snapshots."""
    a, b = before.get("cpu_ticks"), after.get("cpu_ticks")
    cores = after.get("cores") or before.get("cores") or 0
    if not a or not b or not cores or b["total"] <= a["total"]:
        return None
    others = (b["busy"] - a["busy"]) - (b["self"] - a["self"])
    return max(0.0, others / (b["total"] - a["total"]) * cores)


def process_rss_mb() -> dict[str, float]:
    """This process's current and peak RSS (peak from getrusage: kB on Linux)."""
    out = {}
    status = _read("/proc/self/status") or ""
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            out["rss_mb"] = round(int(line.split()[1]) / 1024.0, 1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out["peak_rss_mb"] = round(peak / (1024.0 * 1024.0 if sys.platform == "darwin" else 1024.0), 1)
    return out


# -- boards ----------------------------------------------------------------------------------------
def raspberry_pi() -> dict[str, Any]:
    if shutil.which("vcgencmd") is None:
        return {}
    return parse_vcgencmd(_run(["vcgencmd", "get_throttled"]) or "", _run(["vcgencmd", "measure_temp"]) or "")


def parse_vcgencmd(throttled: str, temp: str) -> dict[str, Any]:
    """`get_throttled` ("throttled=0x50005") and `measure_temp` ("temp=48.3'C") -> flags and SoC temperature."""
    out: dict[str, Any] = {}
    if "=" in throttled:
        try:
            bits = int(throttled.split("=", 1)[1].strip(), 16)
        except ValueError:
            bits = None
        if bits is not None:
            out["throttled_bits"] = hex(bits)
            out["undervoltage_now"] = bool(bits & 0x1)
            out["freq_capped_now"] = bool(bits & 0x2)
            out["throttled_now"] = bool(bits & 0x4)
            out["soft_temp_limit_now"] = bool(bits & 0x8)
            out["throttled_since_boot"] = bool(bits & 0x40000)
    if "=" in temp:
        try:
            out["soc_temp_c"] = float(temp.split("=", 1)[1].split("'")[0])
        except ValueError:
            pass
    return out


def parse_nvpmodel(text: str) -> dict[str, Any]:
    """`nvpmodel -q` ("NV Power Mode: MAXN" then the mode id) -> power_mode, power_mode_id."""
    out: dict[str, Any] = {}
    for line in text.splitlines():
        if "Power Mode" in line and ":" in line:
            out["power_mode"] = line.split(":", 1)[1].strip()
        elif line.strip().isdigit():
            out["power_mode_id"] = int(line.strip())
    return out


def jetson(root: str = "/", with_tegrastats: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {}
    mode = _run(["nvpmodel", "-q"])
    if mode:
        out.update(parse_nvpmodel(mode))
    gpu = _jetson_gpu_freq(root)
    if gpu is not None:
        out["gpu_cur_mhz"] = gpu // 1_000_000
    emc = _int(_read(_p(root, "/sys/kernel/debug/bpmp/debug/clk/emc/rate")))
    if emc is not None:
        out["emc_mhz"] = emc // 1_000_000
    if with_tegrastats and mode is not None and shutil.which("tegrastats"):
        line = _tegrastats_line()
        if line:
            out["tegrastats"] = line
    return out


# Jetson GPU devfreq nodes are named after the GPU block: ga10b (Orin), gv11b (Xavier), gp10b (TX2),
# gm20b / 57000000.gpu (Nano)
_JETSON_GPUS = ("gpu", "ga10b", "gv11b", "gp10b", "gm20b")


def _jetson_gpu_freq(root: str) -> Optional[int]:
    for d in sorted(glob.glob(_p(root, "/sys/class/devfreq/*"))):
        if any(g in os.path.basename(d) for g in _JETSON_GPUS):
            hz = _int(_read(os.path.join(d, "cur_freq")))
            if hz is not None:
                return hz
    return None


def _tegrastats_line() -> Optional[str]:
    # tegrastats streams forever: read one line and stop it, within the probe timeout
    try:
        p = subprocess.Popen(["tegrastats", "--interval", "100"], stdout=subprocess.PIPE, text=True)
    except OSError:
        return None
    try:
        import selectors
        sel = selectors.DefaultSelector()
        sel.register(p.stdout, selectors.EVENT_READ)  # type: ignore[arg-type]
        return p.stdout.readline().strip() if sel.select(CMD_TIMEOUT_S) else None  # type: ignore[union-attr]
    finally:
        p.kill()
        p.wait()


ANDROID_PROPS = ("ro.product.model", "ro.product.manufacturer", "ro.board.platform", "ro.hardware",
                 "ro.build.version.release", "ro.build.version.sdk", "ro.product.cpu.abi", "ro.soc.model")


def android() -> dict[str, Any]:
    if shutil.which("getprop") is None:
        return {}
    out: dict[str, Any] = {}
    for prop in ANDROID_PROPS:
        v = _run(["getprop", prop], timeout=0.2)
        if v:
            out[prop] = v
    return out


_HAL_TEMP = re.compile(r"mValue=([-\d.]+), mType=\d+, mName=([^,}]+)")


def android_thermal() -> dict[str, Any]:
    text = _run(["dumpsys", "thermalservice"], timeout=1.0)
    return parse_thermalservice(text) if text else {}


def parse_thermalservice(text: str) -> dict[str, Any]:
    """`dumpsys thermalservice` -> the framework's thermal status and the HAL's current temperatures."""
    out: dict[str, Any] = {}
    in_current = False
    for line in text.splitlines():
        if line.strip().startswith("Thermal Status:") and "thermal_status" not in out:
            status = _int(line.split(":", 1)[1].strip())  # 0 none, 1 light, 2 moderate, 3 severe, ...
            if status is not None:
                out["thermal_status"] = status
        elif line.startswith("Current temperatures from HAL"):
            in_current = True
        elif in_current:
            m = _HAL_TEMP.search(line)
            if m:
                out.setdefault("temps_c", {})[m.group(2).strip()] = float(m.group(1))
            elif not line[:1].isspace():
                in_current = False  # the next section ("Current cooling devices from HAL:", ...)
    return out


# -- public API ------------------------------------------------------------------------------------
def snapshot(root: str = "/") -> dict[str, Any]:
    """The device state now. Keys are present only where the device exposes them."""
    t0 = time.perf_counter()
    snap: dict[str, Any] = {"time": time.time(), "cpu_model": cpu_model(root), "cores": os.cpu_count() or 0,
                            "python": platform.python_version()}
    freq = cpufreq(root)
    if freq:
        snap["cpufreq"] = freq
        govs = sorted({c["governor"] for c in freq.values() if "governor" in c})
        if govs:
            snap["governor"] = govs[0] if len(govs) == 1 else ",".join(govs)
    temps = thermal(root)
    if temps:
        snap["temps_c"] = temps
    la = loadavg(root)
    if la is not None:
        snap["loadavg"] = la
    ticks = cpu_ticks(root)
    if ticks:
        snap["cpu_ticks"] = ticks
    emu = emulation(root)
    if emu:
        snap["emulated"] = emu
    snap.update(meminfo(root))
    snap.update(process_rss_mb())
    for key, probe in (("rpi", raspberry_pi), ("jetson", lambda: jetson(root)), ("android", android_thermal)):
        got = probe()
        if got:
            snap[key] = got
    snap["probe_ms"] = round((time.perf_counter() - t0) * 1000.0, 2)
    return snap


def _max_temp(s: dict[str, Any]) -> Optional[float]:
    vals = list((s.get("temps_c") or {}).values())
    if "soc_temp_c" in (s.get("rpi") or {}):
        vals.append(s["rpi"]["soc_temp_c"])
    vals.extend(((s.get("android") or {}).get("temps_c") or {}).values())
    return max(vals) if vals else None


def _throttled(s: dict[str, Any]) -> bool:
    rpi = s.get("rpi") or {}
    if rpi.get("throttled_now") or rpi.get("freq_capped_now") or rpi.get("soft_temp_limit_now"):
        return True
    return (s.get("android") or {}).get("thermal_status", 0) >= 2  # 2 = moderate: the OS is throttling


def compare(before: dict[str, Any], after: dict[str, Any], own_threads: int = 1) -> list[str]:
    """Flags for a run whose device state moved (freq-changed, temp-rose, hot, throttled, busy), and
    for a device that is not what it claims (emulated)."""
    flags = [f"emulated({after['emulated']})"] if after.get("emulated") else []
    fb, fa = before.get("cpufreq") or {}, after.get("cpufreq") or {}
    for core in sorted(set(fb) & set(fa)):
        a, b = fb[core].get("cur_khz"), fa[core].get("cur_khz")
        if a and b and abs(b - a) / a > FREQ_CHANGE:
            flags.append("freq-changed")
            break
    if before.get("governor") and after.get("governor") and before["governor"] != after["governor"]:
        flags.append("governor-changed")
    jb, ja = before.get("jetson") or {}, after.get("jetson") or {}
    if jb.get("power_mode") and ja.get("power_mode") and jb["power_mode"] != ja["power_mode"]:
        flags.append("power-mode-changed")
    gb, ga = jb.get("gpu_cur_mhz"), ja.get("gpu_cur_mhz")
    if gb and ga and abs(ga - gb) / gb > FREQ_CHANGE:  # DVFS moved the GPU clock under the run
        flags.append("gpu-freq-changed")
    tb, ta = _max_temp(before), _max_temp(after)
    if tb is not None and ta is not None and ta - tb > TEMP_RISE_C:
        flags.append("temp-rose")
    if (ta is not None and ta > HOT_C) or (tb is not None and tb > HOT_C):
        flags.append("hot")
    if any(_throttled(s) for s in (before, after)):
        flags.append("throttled")
    busy_by_ticks = other_cores(before, after)
    if busy_by_ticks is not None:  # measured over exactly the run, our own worker left out
        if busy_by_ticks > BUSY_OTHER_CORES:
            flags.append(f"busy(others used {busy_by_ticks:.1f} cores)")
        return flags
    cores = before.get("cores") or after.get("cores") or 0
    loads = []
    if before.get("loadavg"):
        loads.append(before["loadavg"][0])
    if after.get("loadavg"):
        loads.append(after["loadavg"][0] - own_threads)  # during the run our own worker adds its threads
    if cores and loads and max(loads) > max(1.0, BUSY_LOAD_PER_CORE * cores):
        flags.append("busy")
    return flags


def device_facts(root: str = "/") -> dict[str, Any]:
    """Static facts for GetInfo: what the device is, not what state it is in."""
    facts: dict[str, Any] = {
        "cpu_model": cpu_model(root), "cores": os.cpu_count() or 0, "machine": platform.machine(),
        "system": platform.system(), "release": platform.release(), "python": platform.python_version(),
    }
    facts.update({k: v for k, v in meminfo(root).items() if k == "mem_total_mb"})
    emu = emulation(root)
    if emu:
        facts["emulated"] = emu
    model = _read(_p(root, "/proc/device-tree/model")) or _read(_p(root, "/sys/firmware/devicetree/base/model"))
    if model:
        facts["board"] = model.rstrip("\x00")
    freq = cpufreq(root)
    if freq:
        facts["governors"] = sorted({c["governor"] for c in freq.values() if "governor" in c})
        facts["max_khz"] = max((c.get("max_khz", 0) for c in freq.values()), default=0)
    zones = sorted(thermal(root))
    if zones:
        facts["thermal_zones"] = zones
    jet = jetson(root, with_tegrastats=False)
    if "power_mode" in jet:
        facts["jetson_power_mode"] = jet["power_mode"]
    if _read(_p(root, "/etc/nv_tegra_release")):
        facts["l4t"] = (_read(_p(root, "/etc/nv_tegra_release")) or "").splitlines()[0]
    props = android()
    if props:
        facts["android"] = props
    return facts
