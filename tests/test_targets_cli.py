"""`host targets add/list/show` and the documented example targets (no devices needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from host.cli import main
from host.targets import Target, load_targets, parse_target

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name,kind,transport", [("local", "local", "local"),
                                                 ("raspberry-pi", "raspberry-pi", "ssh"),
                                                 ("android", "android", "adb"), ("jetson", "jetson", "ssh")])
def test_example_targets_parse_and_comment_every_field(name, kind, transport):
    path = ROOT / "targets" / f"{name}.toml"
    t = parse_target(path)
    assert (t.name, t.kind, t.transport) == (name, kind, transport)
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith("#"):
            assert lines[i - 1].startswith("#"), f"{path.name}: field without a comment: {line}"
    if name == "jetson":
        assert t.system_site_packages and t.prefer_runtimes == ["tensorrt"]


def test_add_writes_a_commented_file_that_loads_back(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EDGEBENCH_TARGETS", str(tmp_path))
    rc = main(["targets", "add", "pi5", "--kind", "raspberry-pi", "--transport", "ssh", "--host", "10.0.0.7",
               "--port", "2222", "--user", "pi", "--threads", "4", "--cpu-affinity", "2,3", "--wheels-dir",
               "/srv/wheels", "--prefer-runtime", "litert", "--dir", str(tmp_path), "--json"])
    assert rc == 0
    written = Path(json.loads(capsys.readouterr().out)["written"])
    t = parse_target(written)
    assert (t.host, t.port, t.user, t.threads, t.cpu_affinity, t.wheels_dir) == (
        "10.0.0.7", 2222, "pi", 4, "2,3", "/srv/wheels")
    assert t.prefer_runtimes == ["litert"] and t.agent_port == Target(name="x").agent_port
    assert "# ssh: port of the device's sshd" in written.read_text()
    # list and show find it through $EDGEBENCH_TARGETS
    assert main(["targets", "list", "--json"]) == 0
    names = [x["name"] for x in json.loads(capsys.readouterr().out)]
    assert "pi5" in names and "local" in names
    assert main(["targets", "show", "pi5", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["source"] == str(written)
    # no silent overwrite; user errors are one line and exit 2
    assert main(["targets", "add", "pi5", "--kind", "raspberry-pi", "--transport", "ssh", "--host", "x",
                 "--dir", str(tmp_path)]) == 2
    assert "exists; use --force" in capsys.readouterr().err
    assert main(["targets", "add", "nohost", "--kind", "jetson", "--transport", "ssh", "--dir", str(tmp_path)]) == 2
    assert "ssh transport needs host" in capsys.readouterr().err
    assert set(load_targets([tmp_path])) == {"local", "pi5"}


def test_check_of_an_unreachable_device_says_so(tmp_path, monkeypatch, capsys):
    from tests.sshd_fixture import free_port

    (tmp_path / "gone.toml").write_text(f'kind = "linux"\ntransport = "ssh"\nhost = "127.0.0.1"\n'
                                        f'port = {free_port()}\nuser = "nobody"\n')
    monkeypatch.setenv("EDGEBENCH_TARGETS", str(tmp_path))
    assert main(["targets", "check", "gone", "--json"]) == 1
    rep = json.loads(capsys.readouterr().out)
    assert rep["reachable"] is False
    assert any("cannot reach nobody@127.0.0.1" in m for m in rep["missing"])


def test_a_mistyped_target_file_is_one_line_and_spares_the_others(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EDGEBENCH_TARGETS", str(tmp_path))
    (tmp_path / "bad.toml").write_text('kind = "local"\ntransport = "local"\nthreads = "2"\n')
    (tmp_path / "good.toml").write_text('kind = "local"\ntransport = "local"\nthreads = 2\n')
    assert main(["targets", "list", "--json"]) == 0
    out, err = capsys.readouterr()
    assert {t["name"] for t in json.loads(out)} >= {"local", "good"}
    assert "bad.toml: threads must be an integer, not '2'" in err
    assert main(["targets", "show", "bad"]) == 2
    assert "threads must be an integer" in capsys.readouterr().err


def test_deploy_refuses_bad_numbers_and_a_bare_npy_in_one_line(tmp_path, capsys):
    import numpy as np

    np.save(tmp_path / "x.npy", np.zeros((1, 4), np.float32))
    (tmp_path / "m.tflite").write_bytes(b"")
    for args, words in ((["--threads", "-3"], "--threads must be between"),
                        (["--seed", str(2**64)], "--seed must be between"),
                        (["--inputs", str(tmp_path / "x.npy")], "is one .npy array")):
        assert main(["deploy", "--target", "local", "--artifact", str(tmp_path / "m.tflite"), *args]) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], err
