"""ArtifactStore directly (no gRPC): a stalled upload must not make a resumed push of the same artifact wait."""

from __future__ import annotations

import hashlib
import queue
import threading
import time
from typing import Iterator, Optional

import pytest

from agent.store import BUSY_MESSAGE, ArtifactStore, Header, StoreError

# a minimal "TFLite" file: the store sniffs the TFL3 identifier at bytes 4..8
BLOB = b"\x1c\x00\x00\x00TFL3" + bytes(range(256)) * 40


def _header(offset: int = 0) -> Header:
    return Header(sha256=hashlib.sha256(BLOB).hexdigest(), size=len(BLOB), file_name="m.tflite", format="tflite",
                  offset=offset)


class StalledUpload:
    """An upload in a thread that sends `first` bytes, then stalls until released (a link that hangs)."""

    def __init__(self, store: ArtifactStore, first: int):
        self.first, self.release = first, threading.Event()
        self.sent = threading.Event()
        self.result: queue.Queue[object] = queue.Queue()
        self.thread = threading.Thread(target=self._run, args=(store,), daemon=True)
        self.thread.start()
        assert self.sent.wait(10)

    def _chunks(self) -> Iterator[bytes]:
        yield BLOB[: self.first]
        self.sent.set()
        self.release.wait(30)          # the stall: the stream neither ends nor sends

    def _run(self, store: ArtifactStore) -> None:
        try:
            self.result.put(store.receive(_header(), self._chunks()))
        except StoreError as e:
            self.result.put(e)

    def finish(self) -> Optional[object]:
        self.release.set()
        self.thread.join(10)
        return self.result.get(timeout=1)


def test_resumed_push_during_a_stalled_one_is_told_to_retry_quickly(tmp_path):
    store = ArtifactStore(tmp_path / "store", lock_wait_s=0.3)
    stalled = StalledUpload(store, first=1000)
    try:
        t0 = time.monotonic()
        with pytest.raises(StoreError) as ei:
            store.receive(_header(), iter([BLOB]))
        waited = time.monotonic() - t0
        # refused after the lock wait, not after the stalled upload's (here 30 s) stall
        assert 0.25 <= waited < 5
        assert ei.value.code == "incomplete"        # gRPC ABORTED: the host's push retries it
        assert ei.value.message == BUSY_MESSAGE
        assert not store.exists(_header().sha256)
        # deleting the artifact meanwhile is refused the same way instead of hanging
        with pytest.raises(StoreError, match="already in progress"):
            store.delete(_header().sha256)
    finally:
        cut = stalled.finish()
    # the stalled upload ended early: its bytes are kept, and the retry resumes from them and publishes
    assert isinstance(cut, StoreError) and cut.code == "incomplete" and "1000 of" in cut.message
    held = store.stat(_header().sha256)["bytes_held"]
    assert held == 1000
    r = store.receive(_header(offset=held), iter([BLOB[held:]]))
    assert r["already_present"] is False and r["bytes_received"] == len(BLOB) - held
    assert store.path(_header().sha256).read_bytes() == BLOB


def test_a_waiting_push_proceeds_once_the_other_finishes_within_the_wait(tmp_path):
    store = ArtifactStore(tmp_path / "store", lock_wait_s=10)
    stalled = StalledUpload(store, first=len(BLOB))       # everything sent; only the stream end is late
    threading.Timer(0.3, stalled.release.set).start()
    t0 = time.monotonic()
    r = store.receive(_header(), iter([BLOB]))
    assert r["already_present"] is True and time.monotonic() - t0 < 9
    assert stalled.finish()["already_present"] is False   # type: ignore[index]


def test_an_already_present_artifact_drains_without_holding_the_lock(tmp_path):
    store = ArtifactStore(tmp_path / "store", lock_wait_s=0.3)
    store.receive(_header(), iter([BLOB]))
    release = threading.Event()

    def slow() -> Iterator[bytes]:
        release.wait(10)
        yield BLOB

    t = threading.Thread(target=store.receive, args=(_header(), slow()), daemon=True)
    t.start()
    time.sleep(0.1)
    try:
        assert store.delete(_header().sha256) is True        # not blocked by the slow, redundant sender
    finally:
        release.set()
        t.join(10)
