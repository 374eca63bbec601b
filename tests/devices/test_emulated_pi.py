"""Opt-in device tier (`make test-devices`): an emulated Raspberry Pi, end to end.

An arm64 Debian bookworm rootfs (tests/devices/make_pi_rootfs.sh: mmdebstrap + qemu-user-static
binfmt, cached in /var/cache/edgebench-pi) runs its own sshd in a chroot; every aarch64 binary in it
runs under qemu-user with QEMU_CPU=cortex-a72 (a Pi 4 core). `host deploy --target <pi>` then finds
nothing but sshd and python3 there: it builds the agent wheel, downloads aarch64 wheels
(grpcio, protobuf, numpy, ai-edge-litert) for the Pi's Python, pushes them, creates the venv, starts
the agent and benchmarks a real int8 model. Latency there is EMULATED: it proves correctness only.

Runs only with EDGEBENCH_TEST_DEVICES=1 (set by `make test-devices`), as root.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.sshd_fixture import Sshd, sshd_skip_reason

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("EDGEBENCH_PI_CACHE", "/var/cache/edgebench-pi"))
ROOTFS = CACHE / "rootfs"
WHEELS = Path(os.environ.get("EDGEBENCH_PI_WHEELS", str(CACHE / "wheels")))
EMULATED_NOTE = ("NOTE: the Raspberry Pi here is EMULATED (qemu-user, cortex-a72 on x86): its latency numbers "
                 "prove the pipeline correct, not the speed of a Pi")

pytestmark = [
    pytest.mark.devices, pytest.mark.root,
    pytest.mark.skipif(os.environ.get("EDGEBENCH_TEST_DEVICES") != "1",
                       reason="opt-in device tier: run `make test-devices` (EDGEBENCH_TEST_DEVICES=1, root)"),
]


def _mount(rootfs: Path) -> list[Path]:
    """/proc and /dev inside the chroot; NOT /sys (LiteRT's cpuinfo segfaults under qemu-user with it)."""
    done = []
    for target, args in ((rootfs / "proc", ["-t", "proc", "proc"]), (rootfs / "dev", ["--rbind", "/dev"])):
        if subprocess.run(["mountpoint", "-q", str(target)]).returncode != 0:
            subprocess.run(["mount", *args, str(target)], check=True)
            if target.name == "dev":
                subprocess.run(["mount", "--make-rslave", str(target)], check=True)
            done.append(target)
    return done


@pytest.fixture(scope="module")
def pi(tmp_path_factory):
    # Opted in (make test-devices): a tier that cannot run fails, it never turns into a quiet skip.
    if sshd_skip_reason() is not None:
        pytest.fail(f"the emulated-device tier needs sshd: {sshd_skip_reason()}")
    r = subprocess.run(["sh", str(HERE / "make_pi_rootfs.sh"), str(CACHE)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail(f"cannot build the arm64 rootfs (mmdebstrap, qemu-user-static, binfmt): {r.stderr[-300:]}")
    mounted = _mount(ROOTFS)
    kh = tmp_path_factory.mktemp("kh") / "known_hosts"
    old = os.environ.get("EDGEBENCH_KNOWN_HOSTS")
    os.environ["EDGEBENCH_KNOWN_HOSTS"] = str(kh)
    prefix = ["env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root",
              "QEMU_CPU=cortex-a72", "chroot", str(ROOTFS)]
    # SetEnv: sessions get QEMU_CPU too (sshd builds their environment afresh)
    sshd = Sshd(ROOTFS / "etc" / "edgebench-test", command_prefix=prefix, inner_dir="/etc/edgebench-test",
                extra_config="SetEnv QEMU_CPU=cortex-a72\n")
    try:
        yield sshd.start(timeout=60)
    finally:
        sshd.stop()
        for m in reversed(mounted):
            subprocess.run(["umount", "-R", "-l", str(m)], check=False)
        if old is None:
            os.environ.pop("EDGEBENCH_KNOWN_HOSTS", None)
        else:
            os.environ["EDGEBENCH_KNOWN_HOSTS"] = old


def test_deploy_to_emulated_pi_bootstraps_and_benchmarks_int8(pi, tflite_int8_model, tmp_path, monkeypatch, capsys):
    from host.cli import main
    from host.client import AgentClient
    from host.targets import get_target
    from host.transports import open_transport

    workdir = f"/root/edgebench-test-{os.getpid()}"          # fresh: this run must bootstrap
    tdir = tmp_path / "targets"
    tdir.mkdir()
    (tdir / "emupi.toml").write_text(
        'name = "emupi"\nkind = "raspberry-pi"\ntransport = "ssh"\n'
        'description = "emulated Raspberry Pi 4 (qemu-user arm64 chroot): latency proves correctness only"\n'
        f'host = "127.0.0.1"\nport = {pi.port}\nuser = "root"\nkey = "{pi.client_key}"\n'
        f'workdir = "{workdir}"\npython = "python3"\nruntime_extra = "tflite"\nwheels_dir = "{WHEELS}"\n'
        'agent_port = 0\nthreads = 4\n')
    monkeypatch.setenv("EDGEBENCH_TARGETS", str(tdir))
    try:
        rc = main(["deploy", "--target", "emupi", "--artifact", str(tflite_int8_model), "--runs", "10",
                   "--min-seconds", "0.5", "--max-seconds", "20", "--warmup", "2", "--timeout", "600",
                   "--db", str(tmp_path / "r.sqlite"), "--json"])
        out = capsys.readouterr()
        assert rc == 0, out.err[-3000:]
        assert "bootstrapping agent" in out.err and "aarch64" in out.err
        # the agent sees through qemu-user and every number from it says so
        assert "EMULATED CPU" in out.err
        (rec,) = json.loads(out.out)
        from host.results.store import ResultStore

        (stored,) = ResultStore(tmp_path / "r.sqlite").benchmarks(target="emupi")
        assert stored["device"]["machine"] == "aarch64" and stored["device"]["facts"]["emulated"] == "qemu-user"
        assert "emulated(qemu-user)" in rec["flags"]
        assert rec["runtime"]["name"] == "litert" and rec["runs"] >= 10
        assert rec["precision"] in ("int8", "unknown") and rec["latency_ms"]["p50"] > 0
        assert any(WHEELS.glob("*aarch64/ai_edge_litert-*.whl"))

        # correctness on the emulated ARM core: the device's int8 outputs equal the host's LiteRT's
        from ai_edge_litert.interpreter import Interpreter

        interp = Interpreter(model_path=str(tflite_int8_model))
        interp.allocate_tensors()
        inp, outp = interp.get_input_details()[0], interp.get_output_details()[0]
        rng = np.random.default_rng(0)
        feeds = [rng.integers(-128, 128, size=inp["shape"], dtype=np.int8) for _ in range(4)]
        expected = []
        for x in feeds:
            interp.set_tensor(inp["index"], x)
            interp.invoke()
            expected.append(interp.get_tensor(outp["index"]).copy())
        from host.artifacts import load_artifact

        sha = load_artifact(tflite_int8_model).manifest.sha256
        with open_transport(get_target("emupi")) as tr:
            address = tr.connect()
            with AgentClient(address, timeout=300) as c:
                got = [next(iter(o.values())) for o, _ in c.infer(sha, [{inp["name"]: x} for x in feeds])]
        for g, e in zip(got, expected):
            assert g.dtype == np.int8 and g.shape == e.shape
            # XNNPACK's ARM and x86 int8 kernels may round one step apart, never more
            assert np.abs(g.astype(int) - e.astype(int)).max() <= 1
        with capsys.disabled():
            lat = rec["latency_ms"]
            print(f"\n{EMULATED_NOTE}\n  emulated p50 {lat['p50']:.2f} ms over {rec['runs']} runs "
                  f"({rec['runtime']['name']} {rec['runtime']['version']}, aarch64); outputs match the host's",
                  file=sys.stderr)
    finally:
        with open_transport(get_target("emupi")) as tr:
            tr.stop_agent()
            tr.run(f"rm -rf {workdir}", check=False)
        shutil.rmtree(ROOTFS / workdir.lstrip("/"), ignore_errors=True)
