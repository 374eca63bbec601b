"""Content-addressed artifact store on the device.

Layout under the store root:
    objects/<sha256>/data      the published artifact (verified), read-only to runtimes
    objects/<sha256>/meta.json file name, format, size, host manifest, created / last used
    partial/<sha256>.part      bytes of an upload in progress; its size is the resume offset
    partial/<sha256>.json      the upload's header
Publishing verifies the sha256 and sniffs the format, then renames a fully written directory into
place, so a reader never sees half an artifact and a crash never leaves a corrupt object. Partial
uploads survive agent restarts, which is what makes a cut upload resumable.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

# fullmatch, not match: "$" also matches before a trailing newline, which made a partial that never publishes
_SHA = re.compile(r"[0-9a-f]{64}")
log = logging.getLogger("agent.store")
FORMATS = ("tflite", "ptl", "torchscript", "pte", "onnx")
# How long a write waits for another write of the same artifact. A stalled upload holds its lock until
# its RPC deadline (possibly an hour); a resumed push must not queue behind it silently but be told to
# retry (the client's resume loop does, from the offset the store then reports).
LOCK_WAIT_S = 5.0
BUSY_MESSAGE = "an upload of this artifact is already in progress; retry"
MAX_ARTIFACT_BYTES = 4 << 30        # a declared size beyond this is refused before a byte is written
PARTIAL_TTL_S = 24 * 3600.0         # a partial upload untouched this long is deleted
FREE_RESERVE_BYTES = 64 << 20       # never fill the device's disk to the last byte


class StoreError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Header:
    sha256: str
    size: int
    file_name: str
    format: str
    offset: int = 0
    manifest_json: str = ""


def sniff_format(path: Path, fmt: str) -> Optional[str]:
    """Why the file is not a `fmt` model (None when it looks like one). Cheap magic-byte checks only."""
    with open(path, "rb") as f:
        head = f.read(16)
    if fmt == "tflite":
        return None if head[4:8] == b"TFL3" else "not a TFLite flatbuffer (no TFL3 identifier)"
    if fmt in ("ptl", "torchscript"):
        # "PK" alone accepted garbage: require a readable central directory with at least one entry
        try:
            with zipfile.ZipFile(path) as z:
                if z.infolist():
                    return None
        except (zipfile.BadZipFile, OSError, ValueError):
            pass
        return "not a TorchScript/lite-interpreter zip archive (no valid zip central directory)"
    if fmt == "pte":
        return None if head[4:6] == b"ET" else "not an ExecuTorch program (no ET identifier)"
    if fmt == "onnx":
        # a serialized ModelProto starts with field 1 (ir_version, varint): tag byte 0x08
        return None if head[:1] == b"\x08" else "not an ONNX model (no ir_version field)"
    return f"unknown format {fmt!r} (known: {', '.join(FORMATS)})"


class ArtifactStore:
    def __init__(self, root: str | Path, quota_bytes: int = 0, lock_wait_s: float = LOCK_WAIT_S,
                 max_artifact_bytes: int = MAX_ARTIFACT_BYTES, partial_ttl_s: float = PARTIAL_TTL_S,
                 free_reserve_bytes: int = FREE_RESERVE_BYTES):
        self.root = Path(root).expanduser()
        self.objects = self.root / "objects"
        self.partial = self.root / "partial"
        self.objects.mkdir(parents=True, exist_ok=True)
        self.partial.mkdir(parents=True, exist_ok=True)
        self.quota_bytes = quota_bytes
        self.lock_wait_s = lock_wait_s
        self.max_artifact_bytes = max_artifact_bytes
        self.partial_ttl_s = partial_ttl_s
        self.free_reserve_bytes = free_reserve_bytes
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._space = threading.Lock()      # eviction + publish: one at a time, so two uploads never both "fit"
        self._clean_stale_tmp()
        self.expire_partials()

    # ---- queries -------------------------------------------------------------------------------
    def _lock(self, sha: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(sha, threading.Lock())

    @contextmanager
    def _held(self, sha: str) -> Iterator[None]:
        """The per-artifact write lock, or StoreError('incomplete') if another writer keeps it too long."""
        lock = self._lock(sha)
        # "incomplete" (gRPC ABORTED): the client treats it as resumable and retries after StatArtifact
        if not lock.acquire(timeout=self.lock_wait_s):
            raise StoreError("incomplete", BUSY_MESSAGE)
        try:
            yield
        finally:
            lock.release()

    @staticmethod
    def check_sha(sha: str) -> str:
        sha = (sha or "").lower()
        if not _SHA.fullmatch(sha):
            raise StoreError("bad-input", f"not a sha256 hex digest: {sha[:80]!r}")
        return sha

    def path(self, sha: str) -> Path:
        p = self.objects / self.check_sha(sha) / "data"
        if not p.is_file():
            raise StoreError("not-found", f"artifact {sha[:12]} is not on this device; push it first")
        return p

    def meta(self, sha: str) -> dict[str, Any]:
        mp = self.objects / self.check_sha(sha) / "meta.json"
        if not mp.is_file():
            raise StoreError("not-found", f"artifact {sha[:12]} is not on this device; push it first")
        try:
            m = json.loads(mp.read_text())
            if not isinstance(m, dict) or "size" not in m or "format" not in m:
                raise ValueError("fields missing")
            return m
        except (OSError, ValueError) as e:
            # a torn meta.json (power cut before this agent fsync'd it) is one artifact's problem, not the store's
            raise StoreError("corrupt", f"artifact {sha[:12]}: its metadata is unreadable ({e}); delete and push "
                                        "it again") from e

    def exists(self, sha: str) -> bool:
        return (self.objects / self.check_sha(sha) / "meta.json").is_file()

    def stat(self, sha: str) -> dict[str, Any]:
        sha = self.check_sha(sha)
        if self.exists(sha):
            m = self.meta(sha)
            return {"exists": True, "size": m["size"], "bytes_held": m["size"], "format": m["format"],
                    "file_name": m["file_name"], "manifest_json": m.get("manifest_json", ""), "sha256": sha}
        part = self.partial / f"{sha}.part"
        held = part.stat().st_size if part.exists() else 0
        hdr = self._read_header(sha)
        return {"exists": False, "size": hdr.size if hdr else 0, "bytes_held": held,
                "format": hdr.format if hdr else "", "file_name": hdr.file_name if hdr else "",
                "manifest_json": "", "sha256": sha}

    def list(self) -> list[dict[str, Any]]:
        out = []
        for d in sorted(self.objects.iterdir()):
            if _SHA.fullmatch(d.name) and (d / "meta.json").is_file():
                try:
                    out.append(self.stat(d.name))
                except StoreError as e:
                    log.warning("skipping %s: %s", d.name[:12], e.message)   # one torn entry must not hide the rest
        return out

    def total_bytes(self) -> int:
        """Bytes the store holds on disk: published artifacts and partial uploads (the quota counts both)."""
        return sum(a["size"] for a in self.list()) + self.partial_bytes()

    def partial_bytes(self, exclude: str = "") -> int:
        total = 0
        for p in self.partial.glob("*.part"):
            if p.stem != exclude:
                try:
                    total += p.stat().st_size
                except OSError:
                    pass
        return total

    def expire_partials(self) -> int:
        """Delete partial uploads untouched for partial_ttl_s (a client that never came back); how many."""
        if self.partial_ttl_s <= 0:
            return 0
        cutoff = time.time() - self.partial_ttl_s
        n = 0
        for p in list(self.partial.glob("*.part")):
            sha = p.stem
            lock = self._lock(sha)
            if not lock.acquire(blocking=False):
                continue                    # being written right now: not expired
            try:
                if p.exists() and p.stat().st_mtime < cutoff:
                    self._discard_partial(sha)
                    n += 1
            except OSError:
                pass
            finally:
                lock.release()
        for j in self.partial.glob("*.json"):       # a header whose bytes are gone
            if not (self.partial / f"{j.stem}.part").exists() and j.stat().st_mtime < cutoff:
                j.unlink(missing_ok=True)
        return n

    def touch(self, sha: str) -> None:
        """Record use, for least-recently-used eviction."""
        mp = self.objects / self.check_sha(sha) / "meta.json"
        try:
            m = json.loads(mp.read_text())
            m["last_used"] = time.time()
            self._write_json(mp, m)
        except (OSError, ValueError):
            pass

    # ---- writes --------------------------------------------------------------------------------
    def receive(self, header: Header, chunks: Iterable[bytes]) -> dict[str, Any]:
        """Append chunks to the partial upload from header.offset; publish when complete.

        Returns {sha256, size, bytes_received, already_present, format}. Raises StoreError on a bad
        header, an offset the store cannot continue from, a size overrun or a sha256 mismatch (the
        partial file is discarded in that last case; published objects are never touched).
        """
        sha = self.check_sha(header.sha256)
        if header.format not in FORMATS:
            raise StoreError("bad-input", f"unknown artifact format {header.format!r} (known: {', '.join(FORMATS)})")
        if header.size <= 0:
            raise StoreError("bad-input", "artifact size must be positive")
        if header.offset < 0:
            raise StoreError("bad-input", f"upload offset {header.offset} is negative")
        if self.max_artifact_bytes and header.size > self.max_artifact_bytes:
            raise StoreError("too-large", f"artifact of {header.size} bytes exceeds this agent's limit of "
                                          f"{self.max_artifact_bytes} bytes (agent serve --max-artifact-mb)")
        self.expire_partials()
        with self._held(sha):
            if not self.exists(sha):
                return self._receive_locked(sha, header, chunks)
        # drain the stream outside the lock: a slow sender of bytes we already hold blocks no one
        for _ in chunks:
            pass
        return {"sha256": sha, "size": header.size, "bytes_received": 0, "already_present": True,
                "format": header.format}

    def _receive_locked(self, sha: str, header: Header, chunks: Iterable[bytes]) -> dict[str, Any]:
        """receive() for an artifact not yet published, with its lock held."""
        part = self.partial / f"{sha}.part"
        held = part.stat().st_size if part.exists() else 0
        if header.offset > held:
            raise StoreError("bad-offset", f"upload offset {header.offset} is past the {held} bytes held; "
                                           "ask StatArtifact for the resume offset")
        # refused before a byte is written; nothing is evicted for bytes not yet verified
        self._check_admission(sha, header.size, header.size - header.offset)
        self._write_json(self.partial / f"{sha}.json", header.__dict__)
        received = 0
        try:
            with open(part, "r+b" if part.exists() else "wb") as f:
                f.truncate(header.offset)
                f.seek(header.offset)
                for chunk in chunks:
                    if header.offset + received + len(chunk) > header.size:
                        raise StoreError("bad-input", f"upload exceeds the declared size of {header.size} bytes")
                    f.write(chunk)
                    received += len(chunk)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            # the disk filled while we wrote (someone else's files grew after the admission check): keep
            # what fitted, as for a cut upload, and say what to do
            held = part.stat().st_size if part.exists() else 0
            raise StoreError("no-space", f"the device's disk filled up during the upload ({held} of {header.size} "
                                         "bytes held); free some space and push again (it resumes)") from e
        total = header.offset + received
        if total < header.size:
            # The stream ended early (client cut): keep the bytes for a resume.
            raise StoreError("incomplete", f"upload incomplete: {total} of {header.size} bytes held; resume from {total}")
        self._publish(header, part)
        return {"sha256": sha, "size": header.size, "bytes_received": received, "already_present": False,
                "format": header.format}

    def _publish(self, header: Header, part: Path) -> None:
        h = hashlib.sha256()
        with open(part, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        sha = header.sha256.lower()
        if h.hexdigest() != sha:
            self._discard_partial(sha)
            raise StoreError("corrupt", f"sha256 mismatch: received bytes hash to {h.hexdigest()[:12]}, "
                                        f"expected {sha[:12]}; upload discarded, push again")
        why = sniff_format(part, header.format)
        if why:
            self._discard_partial(sha)
            raise StoreError("not-a-model", f"{header.file_name}: {why}")
        with self._space:
            # only now, with the bytes verified, is anything evicted, and only as much as this artifact needs
            self._make_room(sha, header.size)
            tmp = self.objects / f".tmp-{sha}-{uuid.uuid4().hex[:8]}"
            tmp.mkdir()
            os.replace(part, tmp / "data")
            now = time.time()
            try:
                self._write_json(tmp / "meta.json", {
                    "sha256": sha, "size": header.size, "file_name": header.file_name, "format": header.format,
                    "manifest_json": header.manifest_json, "created": now, "last_used": now})
            except OSError as e:
                # no room even for the metadata: the verified bytes go back to partial/, nothing half-published
                os.replace(tmp / "data", part)
                shutil.rmtree(tmp, ignore_errors=True)
                if e.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise StoreError("no-space", "the device's disk is full (the artifact is held, unpublished); "
                                                 "free some space and push again") from e
                raise
            os.replace(tmp, self.objects / sha)
            _fsync_dir(self.objects)
        (self.partial / f"{sha}.json").unlink(missing_ok=True)

    def delete(self, sha: str) -> bool:
        sha = self.check_sha(sha)
        with self._held(sha):
            found = False
            d = self.objects / sha
            if d.exists():
                trash = self.objects / f".tmp-del-{sha}-{uuid.uuid4().hex[:8]}"
                os.replace(d, trash)
                shutil.rmtree(trash, ignore_errors=True)
                found = True
            if (self.partial / f"{sha}.part").exists():
                self._discard_partial(sha)
                found = True
            return found

    # ---- helpers -------------------------------------------------------------------------------
    def _check_admission(self, sha: str, size: int, remaining: int) -> None:
        """Refuse a header the store could never hold: over the quota even after evicting every published
        artifact (other partial uploads count), or more than the disk has free."""
        if self.quota_bytes:
            if size > self.quota_bytes:
                raise StoreError("quota", f"artifact of {size} bytes exceeds the store quota of {self.quota_bytes} "
                                          "bytes (agent serve --quota-mb)")
            others = self.partial_bytes(exclude=sha)
            if others + size > self.quota_bytes:
                raise StoreError("quota", f"artifact of {size} bytes does not fit the store quota of "
                                          f"{self.quota_bytes} bytes next to {others} bytes of unfinished uploads "
                                          "(they expire, or DeleteArtifact them)")
        free = shutil.disk_usage(self.partial).free
        if remaining + self.free_reserve_bytes > free:
            raise StoreError("no-space", f"the device has {free} bytes free; {remaining} more bytes plus a "
                                         f"reserve of {self.free_reserve_bytes} are needed; free some space")

    def _make_room(self, sha: str, incoming: int) -> None:
        """Evict least recently used published artifacts until `incoming` fits the quota; StoreError('quota')
        (evicting nothing) when even evicting all of them would not do."""
        if not self.quota_bytes:
            return
        arts = []
        for a in self.list():
            try:
                arts.append((self.meta(a["sha256"]).get("last_used", 0), a["sha256"], a["size"]))
            except StoreError:
                continue
        arts.sort()
        used = sum(a[2] for a in arts) + self.partial_bytes(exclude=sha)
        need = used + incoming - self.quota_bytes
        if need <= 0:
            return
        if sum(a[2] for a in arts) < need:
            raise StoreError("quota", f"artifact of {incoming} bytes does not fit the quota of {self.quota_bytes} "
                                      "bytes even with every stored artifact evicted; its verified bytes are kept: "
                                      "push again once unfinished uploads expire")
        for _, victim, vsize in arts:
            if need <= 0:
                break
            try:
                if self.delete(victim):
                    need -= vsize
                    log.info("evicted %s (%d bytes) to make room for %s", victim[:12], vsize, sha[:12])
            except StoreError:
                continue            # busy (being written): evict the next least recently used instead

    def _discard_partial(self, sha: str) -> None:
        (self.partial / f"{sha}.part").unlink(missing_ok=True)
        (self.partial / f"{sha}.json").unlink(missing_ok=True)

    def _read_header(self, sha: str) -> Optional[Header]:
        p = self.partial / f"{sha}.json"
        try:
            return Header(**json.loads(p.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    @staticmethod
    def _write_json(path: Path, data: dict) -> None:
        """Atomic and durable: a power cut leaves the old file or the new one, never a torn one."""
        tmp = path.with_name(path.name + f".{uuid.uuid4().hex[:6]}.tmp")
        with open(tmp, "w") as f:
            f.write(json.dumps(data))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)

    def _clean_stale_tmp(self) -> None:
        for d in self.objects.glob(".tmp-*"):
            shutil.rmtree(d, ignore_errors=True)


def _fsync_dir(d: Path) -> None:
    """Make a rename in `d` durable (the directory entry, not only the file's bytes)."""
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
