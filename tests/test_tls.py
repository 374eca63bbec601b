"""Mutual TLS for agents reached without a tunnel: a real agent with gRPC SSL credentials, certificates made
by host.tls (cryptography); the right CA and name get in, a wrong CA or an expired certificate do not."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest

pytest.importorskip("cryptography", reason="needs the host extra (cryptography)")

from host import tls  # noqa: E402
from host.client import AgentClient, AgentError, TlsConfig  # noqa: E402
from host.targets import Target  # noqa: E402
from host.transports import open_transport  # noqa: E402


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    files = tls.init(d / "project", "lab-pi", ips=("127.0.0.1",))
    other = tls.init(d / "other", "lab-pi", ips=("127.0.0.1",))          # a second, unrelated CA
    ca, ca_key = d / "project" / "ca.pem", d / "project" / "ca.key"
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=30)
    exp_cert, exp_key = tls.issue(ca, ca_key, d / "expired-host", "edgebench-host", server=False, days=1,
                                  not_before=past)
    return {"files": files, "other": other, "expired": (str(exp_cert), str(exp_key)), "dir": d}


@pytest.fixture
def tls_agent(agent_factory, pki):
    f = pki["files"]
    # 0.0.0.0 is refused without TLS (test_auth); with it the agent serves every interface
    a = agent_factory(args=("--listen", "0.0.0.0:0", "--tls-cert", f["agent_cert"], "--tls-key", f["agent_key"],
                            "--tls-ca", f["ca"], "--auth-file", f["secret"]))
    return a


def _target(pki, port: int, **over) -> Target:
    f = pki["files"]
    kw = {"name": "lab-pi", "transport": "tcp", "kind": "linux", "host": "127.0.0.1", "agent_port": port,
          "tls_ca": f["ca"], "tls_cert": f["host_cert"], "tls_key": f["host_key"], "secret_file": f["secret"]}
    kw.update(over)
    return Target(**kw)


def test_tcp_transport_over_mutual_tls(tls_agent, pki):
    with open_transport(_target(pki, tls_agent.port)) as tr:
        address = tr.connect()
        with AgentClient(address) as c:
            assert c.info()["agent_version"] and c.list() == []


def _refused(pki, port: int, ca: str, cert: str, key: str, name: str = "lab-pi") -> str:
    secret = open(pki["files"]["secret"]).read().strip()
    with AgentClient(f"127.0.0.1:{port}", timeout=5, secret=secret,
                     tls=TlsConfig(ca=ca, cert=cert, key=key, server_name=name)) as c:
        with pytest.raises(AgentError) as ei:
            c.info()
    return str(ei.value)


def test_wrong_ca_expired_cert_and_wrong_name_are_refused(tls_agent, pki):
    f, o = pki["files"], pki["other"]
    # a host certificate from another CA: the agent refuses the handshake
    assert "unreachable" in _refused(pki, tls_agent.port, f["ca"], o["host_cert"], o["host_key"])
    # the host trusting another CA: it refuses the agent's certificate
    assert "unreachable" in _refused(pki, tls_agent.port, o["ca"], f["host_cert"], f["host_key"])
    # an expired host certificate from the right CA
    assert "unreachable" in _refused(pki, tls_agent.port, f["ca"], *pki["expired"])
    # pinning: the agent's certificate does not carry the name this target expects
    assert "unreachable" in _refused(pki, tls_agent.port, f["ca"], f["host_cert"], f["host_key"], name="other-pi")
    # and with everything right, the same call is served
    with AgentClient(f"127.0.0.1:{tls_agent.port}", secret=open(f["secret"]).read().strip(),
                     tls=TlsConfig(ca=f["ca"], cert=f["host_cert"], key=f["host_key"], server_name="lab-pi")) as c:
        assert c.info()["agent_version"]


def test_tls_without_the_secret_is_still_refused(tls_agent, pki):
    f = pki["files"]
    with AgentClient(f"127.0.0.1:{tls_agent.port}", timeout=5, secret="",
                     tls=TlsConfig(ca=f["ca"], cert=f["host_cert"], key=f["host_key"], server_name="lab-pi")) as c:
        with pytest.raises(AgentError, match="not authenticated"):
            c.info()


def test_tcp_target_missing_files_is_one_line(pki):
    from host.transports.base import TransportError

    with pytest.raises(TransportError, match="needs tls_ca, tls_cert, tls_key, secret_file"):
        open_transport(Target(name="x", transport="tcp", kind="linux", host="127.0.0.1"))


def test_host_tls_init_is_a_host_command(tmp_path, capsys):
    """The CLI makes the CA, the host and agent certificates and the secret, keys private."""
    from host.cli import main

    assert main(["tls", "init", str(tmp_path / "pki"), "--agent", "lab-pi", "--ip", "192.0.2.7", "--json"]) == 0
    files = json.loads(capsys.readouterr().out)
    for k in ("ca", "host_cert", "host_key", "agent_cert", "agent_key", "secret"):
        assert Path(files[k]).is_file(), k
    assert os.stat(files["agent_key"]).st_mode & 0o077 == 0 and os.stat(files["secret"]).st_mode & 0o077 == 0
    assert main(["tls", "init", str(tmp_path / "pki"), "--agent", "x", "--days", "0"]) == 2
