"""Shared fixtures: real agent processes on loopback and small real models made by real converters."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from tests.postgres_fixture import pg_server, pg_url, results_location  # noqa: E402,F401 (fixtures)


def echo_server() -> socket.socket:
    """A loopback TCP server that echoes what it gets (for tunnel and forward tests); close() stops it."""
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)

    def serve() -> None:
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            with c:
                while chunk := c.recv(65536):
                    c.sendall(chunk)

    threading.Thread(target=serve, daemon=True).start()
    return srv


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AgentProcess:
    """A real `agent serve` child process on a loopback port with its own store."""

    def __init__(self, store: Path, log: Path, args: tuple[str, ...] = ()):
        self.store, self.log = Path(store), Path(log)
        self.args = tuple(args)         # extra `agent serve` options (limits, TLS)
        self.proc: subprocess.Popen | None = None
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> AgentProcess:
        port_file = self.store.parent / f"{self.store.name}.port"
        port_file.unlink(missing_ok=True)
        self.store.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agent.cli", "serve", "--listen", "127.0.0.1:0", "--store", str(self.store),
                 "--port-file", str(port_file), *self.args], stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT),
                start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if port_file.exists() and port_file.read_text().strip():
                self.port = int(port_file.read_text())
                # what a transport does: bring the agent's secret back so every client call carries it
                from host.client import remember_agent

                remember_agent(self.address, self.secret)
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)
        raise RuntimeError("agent did not start")

    @property
    def secret(self) -> str:
        a = list(self.args)
        f = Path(a[a.index("--auth-file") + 1]) if "--auth-file" in a else self.store / "agent.secret"
        return f.read_text().strip()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture
def agent_factory(tmp_path):
    started: list[AgentProcess] = []

    def make(store: Path | None = None, args: tuple[str, ...] = ()) -> AgentProcess:
        a = AgentProcess(store or tmp_path / "store", tmp_path / f"agent{len(started)}.log", args)
        started.append(a)
        return a.start()

    yield make
    for a in started:
        a.stop()


@pytest.fixture
def agent(agent_factory):
    return agent_factory()


def make_tflite(path: Path, int8: bool = False, size: int = 32) -> Path:
    """A small real CNN converted by TFLiteConverter (fp32, or full int8 with int8 I/O)."""
    import numpy as np
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    m = tf.keras.Sequential([
        tf.keras.Input((size, size, 3)),
        tf.keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        tf.keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu"),
        tf.keras.layers.GlobalAveragePooling2D(),
        tf.keras.layers.Dense(10)])
    conv = tf.lite.TFLiteConverter.from_keras_model(m)
    if int8:
        rng = np.random.default_rng(0)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([rng.standard_normal((1, size, size, 3)).astype("float32")]
                                               for _ in range(16))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    path.write_bytes(conv.convert())
    return path


@pytest.fixture(scope="session")
def tflite_model(tmp_path_factory) -> Path:
    return make_tflite(tmp_path_factory.mktemp("models") / "small_cnn.tflite")


@pytest.fixture(scope="session")
def tflite_int8_model(tmp_path_factory) -> Path:
    return make_tflite(tmp_path_factory.mktemp("models") / "small_cnn_int8.tflite", int8=True)


@pytest.fixture
def env(tmp_path):
    """The environment for `host` run as a subprocess: a private EDGEBENCH_HOME and targets folder; the local
    agent such a run starts is stopped afterwards."""
    e = dict(os.environ, EDGEBENCH_HOME=str(tmp_path / "home"), EDGEBENCH_TARGETS=str(tmp_path / "targets"))
    yield e
    from host.targets import LOCAL
    from host.transports.local import LocalTransport

    LocalTransport(LOCAL, state_dir=tmp_path / "home" / "agents" / "local").stop_agent()


def host(env: dict, *args: str, check: bool = False, timeout: float = 600) -> subprocess.CompletedProcess:
    """`host ARGS...` in a subprocess with `env` (see the env fixture)."""
    r = subprocess.run([sys.executable, "-m", "host.cli", *args], capture_output=True, text=True, env=env, cwd=ROOT,
                       timeout=timeout)
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r
