"""ArtifactStore limits, directly (no gRPC): the quota never destroys data for bytes not yet verified,
partial uploads count and expire, sizes and free space are checked before a byte is written."""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import zipfile

import pytest

from agent.store import ArtifactStore, Header, StoreError


def blob(n: int, seed: int) -> bytes:
    """A minimal "TFLite" file of n bytes (the store sniffs TFL3 at bytes 4..8)."""
    return b"\x1c\x00\x00\x00TFL3" + bytes([seed]) * (n - 8)


def header(data: bytes, size: int | None = None, offset: int = 0, sha: str | None = None) -> Header:
    return Header(sha256=sha or hashlib.sha256(data).hexdigest(), size=size or len(data), file_name="m.tflite",
                  format="tflite", offset=offset)


def put(store: ArtifactStore, data: bytes) -> str:
    store.receive(header(data), iter([data]))
    return hashlib.sha256(data).hexdigest()


def test_quota_evicts_only_after_verification_and_only_what_is_needed(tmp_path):
    store = ArtifactStore(tmp_path / "s", quota_bytes=1000)
    a, b = put(store, blob(300, 1)), put(store, blob(300, 2))
    store.touch(b)                                   # a is the least recently used
    # a header-only push declaring a large size: refused or left partial, but nothing is evicted
    big = blob(900, 3)
    with pytest.raises(StoreError) as ei:
        store.receive(header(big), iter([]))
    assert ei.value.code == "incomplete"
    assert store.exists(a) and store.exists(b)
    store.delete(hashlib.sha256(big).hexdigest())
    # a push whose bytes do not hash to the claimed sha: discarded, nothing evicted
    wrong = blob(700, 4)
    with pytest.raises(StoreError) as ei:
        store.receive(header(wrong, sha="ab" * 32), iter([wrong]))
    assert ei.value.code == "corrupt"
    assert store.exists(a) and store.exists(b)
    # a verified 500-byte artifact needs 100 bytes more than is free: exactly one victim, the LRU one
    c = put(store, blob(500, 5))
    assert store.exists(c) and store.exists(b) and not store.exists(a)
    assert store.total_bytes() == 800


def test_partials_count_against_the_quota_and_are_reported(tmp_path):
    store = ArtifactStore(tmp_path / "s", quota_bytes=1000)
    first = blob(900, 1)
    with pytest.raises(StoreError):
        store.receive(header(first), iter([first[:800]]))        # cut: 800 bytes held
    assert store.total_bytes() == 800                           # GetInfo's store_bytes counts them
    other = blob(400, 2)
    with pytest.raises(StoreError) as ei:
        store.receive(header(other), iter([other]))
    assert ei.value.code == "quota" and "unfinished uploads" in ei.value.message
    assert not (store.partial / f"{hashlib.sha256(other).hexdigest()}.part").exists()


def test_partials_expire(tmp_path):
    store = ArtifactStore(tmp_path / "s", partial_ttl_s=3600)
    data = blob(500, 1)
    with pytest.raises(StoreError):
        store.receive(header(data), iter([data[:100]]))
    part = store.partial / f"{hashlib.sha256(data).hexdigest()}.part"
    assert part.exists() and store.expire_partials() == 0       # fresh: kept
    old = time.time() - 7200
    os.utime(part, (old, old))
    assert store.expire_partials() == 1 and not part.exists()
    assert store.stat(hashlib.sha256(data).hexdigest())["bytes_held"] == 0
    # and at start-up, for partials left by a previous run
    with pytest.raises(StoreError):
        store.receive(header(data), iter([data[:100]]))
    os.utime(part, (old, old))
    ArtifactStore(tmp_path / "s", partial_ttl_s=3600)
    assert not part.exists()


def test_size_and_free_space_checked_before_a_byte_is_written(tmp_path):
    store = ArtifactStore(tmp_path / "s", max_artifact_bytes=1 << 20)
    with pytest.raises(StoreError) as ei:
        store.receive(header(b"x", size=10**15, sha="cd" * 32), iter([b"x"]))
    assert ei.value.code == "too-large" and "--max-artifact-mb" in ei.value.message
    assert list(store.partial.iterdir()) == []
    free = __import__("shutil").disk_usage(tmp_path).free
    tight = ArtifactStore(tmp_path / "s", free_reserve_bytes=free)    # any upload now exceeds what is free
    with pytest.raises(StoreError) as ei:
        tight.receive(header(blob(100, 1)), iter([blob(100, 1)]))
    assert ei.value.code == "no-space" and "free" in ei.value.message
    assert list(tight.partial.iterdir()) == []


def test_negative_offset_and_sha_with_newline_are_bad_input(tmp_path):
    store = ArtifactStore(tmp_path / "s")
    data = blob(100, 1)
    with pytest.raises(StoreError) as ei:
        store.receive(header(data, offset=-5), iter([data]))
    assert ei.value.code == "bad-input" and "negative" in ei.value.message
    with pytest.raises(StoreError) as ei:
        store.receive(header(data, sha=hashlib.sha256(data).hexdigest() + "\n"), iter([data]))
    assert ei.value.code == "bad-input"
    assert list(store.partial.iterdir()) == []


def test_torn_meta_is_skipped_not_fatal(tmp_path):
    store = ArtifactStore(tmp_path / "s")
    a, b = put(store, blob(100, 1)), put(store, blob(100, 2))
    (store.objects / a / "meta.json").write_text('{"sha256": "')          # a power cut mid-write
    assert [x["sha256"] for x in store.list()] == [b]
    with pytest.raises(StoreError) as ei:
        store.stat(a)
    assert ei.value.code == "corrupt"
    assert store.delete(a) and [x["sha256"] for x in store.list()] == [b]
    # what this agent writes is a complete JSON document, never a tmp file left beside it
    assert json.loads((store.objects / b / "meta.json").read_text())["size"] == 100
    assert not list((store.objects / b).glob("*.tmp"))


def test_zip_sniff_needs_a_real_central_directory(tmp_path):
    store = ArtifactStore(tmp_path / "s")
    garbage = b"PK\x03\x04" + os.urandom(200)
    with pytest.raises(StoreError) as ei:
        store.receive(Header(hashlib.sha256(garbage).hexdigest(), len(garbage), "m.ptl", "ptl"), iter([garbage]))
    assert ei.value.code == "not-a-model" and "central directory" in ei.value.message
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("m/bytecode.pkl", b"\x80\x02")
    real = buf.getvalue()
    r = store.receive(Header(hashlib.sha256(real).hexdigest(), len(real), "m.ptl", "ptl"), iter([real]))
    assert r["already_present"] is False


@pytest.fixture
def tiny_fs(tmp_path):
    """A 3 MiB tmpfs (root only): a device whose disk really fills up."""
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (make test runs as root under CI)")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_a_disk_that_fills_up_is_a_clear_error_and_loses_nothing_published(tiny_fs):
    store = ArtifactStore(tiny_fs / "s", free_reserve_bytes=0)
    kept = [put(store, blob(700_000, i)) for i in (1, 2)]          # 1.4 MB of 3 MB published

    def fill_after_first(data: bytes):
        yield data[:100_000]
        # someone else's file grows after the admission check: the disk is full mid-upload
        with open(tiny_fs / "filler", "wb") as f:
            try:
                f.write(b"\0" * (3 << 20))
            except OSError:
                pass
        yield data[100_000:]

    big = blob(900_000, 3)
    with pytest.raises(StoreError) as ei:
        store.receive(header(big), fill_after_first(big))
    assert ei.value.code == "no-space" and "push again" in ei.value.message
    for sha in kept:   # published objects intact, byte for byte
        assert hashlib.sha256((store.objects / sha / "data").read_bytes()).hexdigest() == sha
    assert sorted(a["sha256"] for a in store.list()) == sorted(kept)
    (tiny_fs / "filler").unlink()
    held = store.stat(hashlib.sha256(big).hexdigest())["bytes_held"]     # what fitted is kept: the push resumes
    assert 0 < held < len(big)
    assert store.receive(header(big, offset=held), iter([big[held:]]))["bytes_received"] == len(big) - held
    assert sorted(a["sha256"] for a in store.list()) == sorted([*kept, hashlib.sha256(big).hexdigest()])
