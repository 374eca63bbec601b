"""Push throughput of a 64 MiB artifact through the agent vs a raw loopback socket copy (ratio), and
the bytes re-sent when pushing an artifact the agent already has (goal: 0). Medians of 5 rounds."""

from __future__ import annotations

import hashlib
import os
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

from common import Agent, write_result

SIZE = 64 * 1024 * 1024
ROUNDS = 5


def raw_socket_copy(path: Path) -> float:
    """Seconds to copy the file over a loopback TCP socket into a file (the floor any protocol pays)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    out = Path(tempfile.mkstemp()[1])

    def sink():
        conn, _ = srv.accept()
        with conn, open(out, "wb") as f:
            while block := conn.recv(1 << 20):
                f.write(block)
            f.flush()
            os.fsync(f.fileno())

    t = threading.Thread(target=sink)
    t.start()
    t0 = time.perf_counter()
    with socket.create_connection(srv.getsockname()) as c, open(path, "rb") as f:
        while block := f.read(1 << 20):
            c.sendall(block)
    t.join()
    dt = time.perf_counter() - t0
    srv.close()
    out.unlink()
    return dt


def main() -> dict:
    from host.client import AgentClient

    tmp = Path(tempfile.mkdtemp())
    agent = Agent()
    grpc_s, raw_s = [], []
    resent = []
    try:
        with AgentClient(agent.address) as c:
            for i in range(ROUNDS):
                # distinct content each round so every push is a real upload (TFL3 id passes the sniff)
                f = tmp / f"a{i}.tflite"
                f.write_bytes(b"\0\0\0\0TFL3" + os.urandom(SIZE - 8))
                digest = hashlib.sha256(f.read_bytes()).hexdigest()
                raw_s.append(raw_socket_copy(f))
                t0 = time.perf_counter()
                r = c.push(f, digest, "tflite")
                grpc_s.append(time.perf_counter() - t0)
                assert r["sent"] == SIZE
                resent.append(c.push(f, digest, "tflite")["sent"])
                f.unlink()
    finally:
        agent.stop()
    mb = SIZE / 2**20
    g, r = statistics.median(grpc_s), statistics.median(raw_s)
    res = {"artifact_mib": mb, "rounds": ROUNDS, "agent_push_mib_s_median": mb / g, "raw_socket_mib_s_median": mb / r,
           "agent_vs_raw_ratio": (mb / g) / (mb / r), "agent_push_s": grpc_s, "raw_socket_s": raw_s,
           "bytes_resent_known_artifact": max(resent),
           "note": "agent push includes sha256 verification, fsync and the atomic publish; raw copy includes fsync"}
    print(f"push 64 MiB: agent {res['agent_push_mib_s_median']:.0f} MiB/s, raw socket "
          f"{res['raw_socket_mib_s_median']:.0f} MiB/s, ratio {res['agent_vs_raw_ratio']:.2f}; "
          f"re-sent bytes for a known artifact: {res['bytes_resent_known_artifact']}")
    write_result("push", res)
    return res


if __name__ == "__main__":
    main()
