"""Helpers shared by the bench scripts: a real agent process, results files."""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))


class Agent:
    """`agent serve` on a free loopback port with a throwaway store."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="edgebench-bench-"))
        port_file = self.dir / "port"
        t0 = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "serve", "--listen", "127.0.0.1:0",
                                      "--store", str(self.dir / "store"), "--port-file", str(port_file)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
                                     start_new_session=True)
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.poll() is not None:
                raise RuntimeError("agent failed to start")
            time.sleep(0.005)
        self.address = f"127.0.0.1:{int(port_file.read_text())}"
        from host.client import AgentClient, read_secret_file, remember_agent

        # what a transport does: bring the agent's secret back so every client for this address carries it
        remember_agent(self.address, read_secret_file(self.dir / "store" / "agent.secret"))
        AgentClient(self.address).wait_ready(10)
        self.startup_s = time.perf_counter() - t0

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(10)


def cpu_description() -> dict:
    """The CPU and the int8-relevant ISA extensions: int8 speed-ups depend on them more than on
    anything else (VNNI / AMX kernels), so two results files are comparable only when these match."""
    from agent.probes import cpu_model

    try:
        flags = next((ln.split(":", 1)[1].split() for ln in open("/proc/cpuinfo") if ln.startswith("flags")), [])
    except OSError:
        flags = []
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm") if f in flags]
    return {"cpu_model": cpu_model(), "isa": isa}


def write_result(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {"bench": name, "when": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": platform.machine(),
            "cpus": os.cpu_count(), **cpu_description(), **data}
    p = RESULTS / f"{name}.json"
    p.write_text(json.dumps(data, indent=2))
    return p


def host_runner(path: str, x, runtime_options: dict | None = None):
    """A zero-argument callable doing one batch-1 inference on one thread through the agent's own Runner
    for the artifact's format (the code a device runs), with the artifact's manifest; float input
    quantized to an int8-I/O model's input as the host check does."""
    import numpy as np

    from agent.runtimes.base import quantize_input
    from host.quantize.host_run import load_runner

    manifest = json.loads(Path(path + ".manifest.json").read_text())
    r = load_runner(path, manifest["format"], manifest, runtime_options=runtime_options)
    spec = r.input_specs()[0]
    x = np.asarray(x)
    if x.ndim == 4 and list(x.shape) != list(spec.shape) and list(x.transpose(0, 2, 3, 1).shape) == list(spec.shape):
        x = x.transpose(0, 2, 3, 1)   # a Keras model's NHWC input
    feed = {spec.name: np.ascontiguousarray(quantize_input(x.reshape(spec.shape), spec))}
    return lambda: r.infer(feed)


def host_runners(artifacts: dict, x) -> tuple[dict, dict]:
    """{key: (artifact path, platform)} -> ({key: host_runner, warmed up once}, {key: one-line error}): a runtime
    that cannot run an artifact is a result, not a crash. A TensorRT Q/DQ stand-in is timed with ONNX Runtime's
    fused kernels: what ORT itself would run."""
    runners, failed = {}, {}
    for key, (path, platform_name) in artifacts.items():
        try:
            runners[key] = host_runner(path, x, {"optimization": "all"} if platform_name == "tensorrt" else None)
            runners[key]()
        except Exception as e:
            runners.pop(key, None)
            failed[key] = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
    return runners, failed
