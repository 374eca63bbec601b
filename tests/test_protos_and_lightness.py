"""The committed gRPC Python matches protos/*.proto, and the agent stays light."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_generated_code_matches_proto(tmp_path):
    # a subprocess: protoc in-process segfaults once tensorflow was imported by another test module
    r = subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT}", f"--python_out={tmp_path}",
                        f"--grpc_python_out={tmp_path}", str(ROOT / "protos" / "edge_agent.proto")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for name in ("edge_agent_pb2.py", "edge_agent_pb2_grpc.py"):
        fresh = (tmp_path / "protos" / name).read_text()
        committed = (ROOT / "protos" / name).read_text()
        assert fresh == committed, f"protos/{name} drifted from the .proto: run `make protos` and commit"


def test_agent_starts_without_host_or_heavy_runtimes():
    code = (
        "import sys, json\n"
        "import agent.cli, agent.server, agent.worker, agent.bench, agent.probes\n"
        "from agent import runtimes\n"
        "runtimes.describe_all()\n"
        "heavy = [m for m in ('torch', 'tensorflow', 'host', 'executorch', 'onnxruntime', 'ai_edge_litert') if m in sys.modules]\n"
        "print(json.dumps(heavy))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_agent_code_never_imports_host():
    offenders = [str(p) for p in (ROOT / "agent").rglob("*.py")
                 if any(line.strip().startswith(("import host", "from host")) for line in p.read_text().splitlines())]
    assert offenders == []


def test_agent_cli_version_and_help():
    out = subprocess.run([sys.executable, "-m", "agent.cli", "--version"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.startswith("agent ")
    out = subprocess.run([sys.executable, "-m", "agent.cli", "serve", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert "--listen" in out.stdout and "loopback" in out.stdout
