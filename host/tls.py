"""A project CA and the certificates for mutual TLS between the host and agents reached without a tunnel.

    host tls init DIR --agent NAME [--ip 192.0.2.7] [--days 825]     (or python -m host.tls init ...)

writes DIR/ca.pem + ca.key (keep the key on the host), DIR/host.pem + host.key (the host's client
certificate), DIR/agent-NAME.pem + .key (copy to the device) and DIR/agent-NAME.secret (the agent's call
secret, copy beside them: `agent serve --auth-file`). Keys are written 0600. Uses `cryptography`
(the `host` extra); the agent itself only needs gRPC's SSL support to use these files.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
import sys
from pathlib import Path
from typing import Any, Optional


def _crypto() -> Any:
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError as e:
        raise SystemExit("host tls needs the cryptography package: pip install 'edgebench[host]'") from e
    return x509, hashes, serialization, ec, ExtendedKeyUsageOID, NameOID


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_pem(key: Any) -> bytes:
    _, _, serialization, _, _, _ = _crypto()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_ca(out: Path, name: str = "edgebench project CA", days: int = 3650) -> tuple[Path, Path]:
    x509, hashes, serialization, ec, _, NameOID = _crypto()
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    _write(out / "ca.pem", cert.public_bytes(serialization.Encoding.PEM))
    _write(out / "ca.key", _key_pem(key), private=True)
    return out / "ca.pem", out / "ca.key"


def issue(ca_pem: Path, ca_key: Path, out_stem: Path, name: str, server: bool, ips: tuple[str, ...] = (),
          days: int = 825, not_before: Optional[dt.datetime] = None) -> tuple[Path, Path]:
    """A leaf certificate signed by the CA: `server` for an agent (DNS name `name` + `ips`), else a host client
    certificate. `not_before`/`days` let tests make an expired one."""
    x509, hashes, serialization, ec, ExtendedKeyUsageOID, NameOID = _crypto()
    ca = x509.load_pem_x509_certificate(Path(ca_pem).read_bytes())
    ca_private = serialization.load_pem_private_key(Path(ca_key).read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    start = not_before or dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
         .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(start).not_valid_after(start + dt.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                               else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
    sans: list[Any] = [x509.DNSName(name)] + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = b.sign(ca_private, hashes.SHA256())
    pem, key_path = out_stem.with_suffix(".pem"), out_stem.with_suffix(".key")
    _write(pem, cert.public_bytes(serialization.Encoding.PEM))
    _write(key_path, _key_pem(key), private=True)
    return pem, key_path


def init(out: Path, agent: str, ips: tuple[str, ...] = (), days: int = 825) -> dict[str, str]:
    """CA (kept if DIR already has one), host client cert, agent server cert and the agent's secret."""
    out = Path(out)
    ca_pem, ca_key = out / "ca.pem", out / "ca.key"
    if not (ca_pem.exists() and ca_key.exists()):
        make_ca(out)
    if not (out / "host.pem").exists():
        issue(ca_pem, ca_key, out / "host", "edgebench-host", server=False, days=days)
    cert, key = issue(ca_pem, ca_key, out / f"agent-{agent}", agent, server=True, ips=ips, days=days)
    secret = out / f"agent-{agent}.secret"
    if not secret.exists():
        _write(secret, (secrets.token_urlsafe(32) + "\n").encode(), private=True)
    return {"ca": str(ca_pem), "host_cert": str(out / "host.pem"), "host_key": str(out / "host.key"),
            "agent_cert": str(cert), "agent_key": str(key), "secret": str(secret)}


def main(argv: Optional[list[str]] = None) -> int:
    """`python -m host.tls ...` is `host tls ...` (host/commands/tls.py)."""
    from host.cli import main as host_main

    return host_main(["tls", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
