"""A real OpenSSH server (Debian openssh-server) on a loopback port with throwaway ed25519 keys.

`sshd -D -e -f CONFIG` runs in the foreground without systemd; root is needed (privilege separation
wants /run/sshd and sshd refuses to run as a normal user with a system config). Also usable for a
chroot'ed sshd (the emulated Raspberry Pi) through `command_prefix`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Optional

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def sshd_skip_reason() -> Optional[str]:
    if os.geteuid() != 0:
        return "needs root (sshd privilege separation; run the suite as root or in CI's root container)"
    if not os.path.exists(SSHD):
        return "needs the Debian package openssh-server (sshd)"
    if not shutil.which("ssh-keygen"):
        return "needs ssh-keygen (Debian package openssh-client)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


class Sshd:
    """sshd on 127.0.0.1:<port>; `client_key` logs in as root. Stop with stop() (or use as a context)."""

    def __init__(self, workdir: Path, port: Optional[int] = None, command_prefix: Optional[list[str]] = None,
                 inner_dir: Optional[str] = None, extra_config: str = ""):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.prefix = command_prefix or []
        # where the files are as sshd sees them (inside a chroot they live at another path)
        self.inner = inner_dir or str(self.dir)
        self.extra_config = extra_config
        self.proc: Optional[subprocess.Popen] = None
        self.log = self.dir / "sshd.log"

    def start(self, timeout: float = 30) -> Sshd:
        host_key = keygen(self.dir / "host_ed25519") if not (self.dir / "host_ed25519").exists() \
            else self.dir / "host_ed25519"
        self.client_key = keygen(self.dir / "client_ed25519") if not (self.dir / "client_ed25519").exists() \
            else self.dir / "client_ed25519"
        shutil.copy(self.client_key.with_suffix(".pub"), self.dir / "authorized_keys")
        inner = self.inner
        (self.dir / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\n"
            f"HostKey {inner}/{host_key.name}\n"
            f"AuthorizedKeysFile {inner}/authorized_keys\n"
            f"PidFile {inner}/sshd.pid\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PubkeyAuthentication yes\nUsePAM no\nStrictModes no\nAllowTcpForwarding yes\n"
            "Subsystem sftp internal-sftp\nLogLevel INFO\n" + self.extra_config)
        if not self.prefix:
            Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.prefix + [SSHD, "-D", "-e", "-f", f"{inner}/sshd_config"],
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited {self.proc.returncode}: {self.log.read_text()[-1500:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.settimeout(timeout)
                    if s.recv(64).startswith(b"SSH-"):
                        return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"sshd did not answer on port {self.port}: {self.log.read_text()[-1500:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def __enter__(self) -> Sshd:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
