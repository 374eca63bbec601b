"""A device-side stand-in for adbd, in stdlib asyncio, that the real `adb` client talks to.

Debian ships the adb client/server but no adbd and no emulator, so the tests play the device: this
speaks the adb transport protocol over TCP (what `adb connect HOST:PORT` uses):

- messages CNXN/OPEN/OKAY/WRTE/CLSE, version 0x01000001, 1 MiB max payload, no AUTH;
- `shell,v2` (exit codes, split stdout/stderr, stdin) and plain `shell:`/`exec:`;
- `sync:` STAT/LIST/SEND/RECV/QUIT (adb push, pull, ls);
- `tcp:PORT` (what `adb forward tcp:X tcp:PORT` opens) and `reverse:` (device-to-host forwards).

Flow control is the protocol's own: one WRTE in flight per stream until the peer's OKAY, and our OKAY
for a host WRTE is sent only after its bytes were consumed, so a slow consumer throttles the host.

Paths in `sync:` are taken under --root (default "/": the real filesystem, so shell commands and pushes
see the same files); shell commands run with /bin/sh -c in --root. `getprop` answers from --prop
values, as a device's property service would; `setsid` behaves like toybox's (no -f).

    python tests/adb_standin.py --port 5557 --root DIR [--prop ro.product.model=Pixel]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import shutil
import signal
import stat
import struct
import sys
import tempfile
from pathlib import Path
from typing import Optional

A_CNXN, A_OPEN, A_OKAY = 0x4E584E43, 0x4E45504F, 0x59414B4F
A_WRTE, A_CLSE, A_AUTH = 0x45545257, 0x45534C43, 0x48545541
A_VERSION = 0x01000001
MAX_PAYLOAD = 1024 * 1024
SYNC_DATA_MAX = 64 * 1024
# shell protocol v2 packet ids
SH_STDIN, SH_STDOUT, SH_STDERR, SH_EXIT, SH_CLOSE_STDIN, SH_WINSIZE = range(6)

DEFAULT_PROPS = {
    "ro.product.model": "EdgeBench Stand-in",
    "ro.product.manufacturer": "edgebench",
    "ro.product.name": "standin",
    "ro.product.device": "standin",
    "ro.build.version.release": "14",
    "ro.build.version.sdk": "34",
    "ro.product.cpu.abi": "x86_64" if os.uname().machine == "x86_64" else "arm64-v8a",
    "ro.hardware": "standin",
    "ro.serialno": "STANDIN0001",
}


def _header(cmd: int, a0: int, a1: int, data: bytes) -> bytes:
    return struct.pack("<6I", cmd, a0, a1, len(data), sum(data) & 0xFFFFFFFF, cmd ^ 0xFFFFFFFF)


class Stream:
    """One adb stream (socket pair) on a connection, seen from the device."""

    def __init__(self, conn: Connection, local_id: int, remote_id: int):
        self.conn, self.local_id, self.remote_id = conn, local_id, remote_id
        self.inbox: asyncio.Queue[Optional[bytes]] = asyncio.Queue()
        self.ready = asyncio.Event()       # set when the peer may take another WRTE
        self.ready.set()
        self.write_lock = asyncio.Lock()
        self.closed = False
        self.buf = b""
        self.task: Optional[asyncio.Task] = None

    async def write(self, data: bytes) -> None:
        async with self.write_lock:
            view = memoryview(data)
            for i in range(0, len(data), self.conn.max_payload):
                await self.ready.wait()
                if self.closed:
                    raise ConnectionResetError("stream closed by host")
                self.ready.clear()
                await self.conn.send(A_WRTE, self.local_id, self.remote_id, bytes(view[i:i + self.conn.max_payload]))

    async def read_chunk(self) -> Optional[bytes]:
        """Next WRTE payload (acknowledged, so the host sends the next), or None at close."""
        if self.buf:
            data, self.buf = self.buf, b""
            return data
        data = await self.inbox.get()
        if data is not None and not self.closed:
            await self.conn.send(A_OKAY, self.local_id, self.remote_id)
        return data

    async def read_exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            data = await self.inbox.get()
            if data is None:
                raise EOFError("stream closed")
            self.buf += data
            await self.conn.send(A_OKAY, self.local_id, self.remote_id)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.ready.set()
            await self.conn.send(A_CLSE, self.local_id, self.remote_id)
        self.conn.streams.pop(self.local_id, None)

    def on_host_close(self) -> None:
        self.closed = True
        self.ready.set()
        self.inbox.put_nowait(None)
        self.conn.streams.pop(self.local_id, None)


class Connection:
    """One TCP connection from the adb server: the device's side of the transport."""

    def __init__(self, device: Device, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.device, self.reader, self.writer = device, reader, writer
        self.streams: dict[int, Stream] = {}
        self.next_id = 1
        self.max_payload = MAX_PAYLOAD
        self.send_lock = asyncio.Lock()
        self.pending_opens: dict[int, asyncio.Future] = {}   # device-initiated (reverse) streams

    async def send(self, cmd: int, a0: int, a1: int, data: bytes = b"") -> None:
        async with self.send_lock:
            self.writer.write(_header(cmd, a0, a1, data) + data)
            await self.writer.drain()

    def new_stream(self, remote_id: int) -> Stream:
        s = Stream(self, self.next_id, remote_id)
        self.streams[s.local_id] = s
        self.next_id += 1
        return s

    async def run(self) -> None:
        try:
            while True:
                head = await self.reader.readexactly(24)
                cmd, a0, a1, length, _check, magic = struct.unpack("<6I", head)
                if magic != cmd ^ 0xFFFFFFFF:
                    raise ConnectionError(f"bad magic for command {cmd:#x}")
                data = await self.reader.readexactly(length) if length else b""
                await self.handle(cmd, a0, a1, data)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            for s in list(self.streams.values()):
                s.on_host_close()
            for task in [s.task for s in self.streams.values() if s.task]:
                task.cancel()
            self.writer.close()

    async def handle(self, cmd: int, a0: int, a1: int, data: bytes) -> None:
        if cmd == A_CNXN:
            self.max_payload = min(MAX_PAYLOAD, a1 or MAX_PAYLOAD)
            await self.send(A_CNXN, A_VERSION, MAX_PAYLOAD, self.device.banner())
        elif cmd == A_AUTH:
            # No authentication on this stand-in: answer as a device with auth disabled does.
            await self.send(A_CNXN, A_VERSION, MAX_PAYLOAD, self.device.banner())
        elif cmd == A_OPEN:
            service = data.rstrip(b"\0").decode(errors="replace")
            s = self.new_stream(a0)
            await self.send(A_OKAY, s.local_id, a0)
            s.task = asyncio.create_task(self.device.serve(s, service))
        elif cmd == A_OKAY:
            fut = self.pending_opens.pop(a1, None)
            if fut is not None and not fut.done():
                fut.set_result(a0)
            s = self.streams.get(a1)
            if s is not None:
                s.remote_id = a0
                s.ready.set()
        elif cmd == A_WRTE:
            s = self.streams.get(a1)
            if s is None:
                await self.send(A_CLSE, 0, a0)
            else:
                s.inbox.put_nowait(data)
        elif cmd == A_CLSE:
            fut = self.pending_opens.pop(a1, None)
            if fut is not None and not fut.done():
                fut.set_result(None)
            s = self.streams.get(a1)
            if s is not None:
                s.on_host_close()

    async def open_to_host(self, service: str) -> Optional[Stream]:
        """Open a stream toward the adb server (reverse forwards); None if the host refuses."""
        s = self.new_stream(0)
        s.ready.clear()
        fut = asyncio.get_running_loop().create_future()
        self.pending_opens[s.local_id] = fut
        await self.send(A_OPEN, s.local_id, 0, service.encode() + b"\0")
        if await fut is None:
            self.streams.pop(s.local_id, None)
            return None
        return s


class Device:
    def __init__(self, root: str, props: dict[str, str]):
        self.root = Path(root).resolve()
        self.props = props
        self.reverse: dict[str, tuple[str, asyncio.AbstractServer]] = {}
        self.connection: Optional[Connection] = None
        self.bin_dir = Path(tempfile.mkdtemp(prefix="adb-standin-bin-"))
        props_file = self.bin_dir / "props"
        props_file.write_text("".join(f"[{k}]: [{v}]\n" for k, v in sorted(props.items())))
        getprop = self.bin_dir / "getprop"
        getprop.write_text(
            "#!/bin/sh\n# the stand-in's property service: getprop [NAME]\n"
            f'if [ -z "$1" ]; then cat "{props_file}"; exit 0; fi\n'
            f"sed -n \"s/^\\[$1\\]: \\[\\(.*\\)\\]$/\\1/p\" \"{props_file}\"\n")
        getprop.chmod(0o755)
        self._toybox_setsid()

    def _toybox_setsid(self) -> None:
        """Play Android's toybox `setsid` (options -c -d -w only): `setsid -f` fails as on a phone.

        The host's util-linux setsid has -f, so without this wrapper a transport that relies on -f
        would pass here and fail on every real device. Other options go to the real setsid (exec:
        same pid). No setsid on the host: none on the stand-in either (the transport's nohup path).
        """
        real = shutil.which("setsid")
        if real is None:
            return
        wrapper = self.bin_dir / "setsid"
        wrapper.write_text(
            "#!/bin/sh\n# toybox setsid: usage setsid [-cdw] command [args...]\n"
            'case "$1" in -*f*) echo "setsid: Unknown option \'f\' (see \\"setsid --help\\")" >&2; exit 1 ;; esac\n'
            f'exec {shlex.quote(real)} "$@"\n')
        wrapper.chmod(0o755)

    def banner(self) -> bytes:
        keys = ("ro.product.name", "ro.product.model", "ro.product.device")
        props = "".join(f"{k}={self.props.get(k, '')};" for k in keys)
        return f"device::{props}features=shell_v2,cmd".encode()

    def path(self, device_path: str) -> Path:
        return self.root / device_path.lstrip("/")

    def shell_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
        env.setdefault("HOME", str(self.root))
        return env

    async def serve(self, s: Stream, service: str) -> None:
        try:
            if service.startswith("shell") and (service[5:6] in (":", ",")):
                opts, _, cmd = service[6:].partition(":") if service[5] == "," else ("", "", service[6:])
                await self.shell(s, cmd, v2="v2" in opts.split(","))
            elif service.startswith("exec:"):
                await self.shell(s, service[5:], v2=False)
            elif service == "sync:":
                await self.sync(s)
            elif service.startswith("tcp:"):
                await self.tcp(s, service[4:])
            elif service.startswith("reverse:"):
                await self.reverse_service(s, service[8:])
            else:
                await s.write(f"FAIL{len('unknown service ' + service):04x}unknown service {service}".encode())
        except (EOFError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            await self._quiet_close(s)

    @staticmethod
    async def _quiet_close(s: Stream) -> None:
        try:
            await s.close()
        except (ConnectionError, OSError):
            pass

    # ---- shell ----------------------------------------------------------------------------------
    async def shell(self, s: Stream, cmd: str, v2: bool) -> None:
        argv = ["/bin/sh", "-c", cmd] if cmd.strip() else ["/bin/sh"]
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE if v2 else asyncio.subprocess.STDOUT,
            cwd=self.root, env=self.shell_env(), start_new_session=True)

        async def pump(pipe: asyncio.StreamReader, ident: int) -> None:
            while chunk := await pipe.read(256 * 1024):
                if v2:
                    await s.write(struct.pack("<BI", ident, len(chunk)) + chunk)
                else:
                    await s.write(chunk)

        async def feed() -> None:
            # stdin: v2 packets (stdin data, close-stdin, window size) or raw bytes for v1
            try:
                while True:
                    if v2:
                        ident, n = struct.unpack("<BI", await s.read_exactly(5))
                        data = await s.read_exactly(n) if n else b""
                        if ident == SH_STDIN and proc.stdin:
                            proc.stdin.write(data)
                            await proc.stdin.drain()
                        elif ident == SH_CLOSE_STDIN and proc.stdin:
                            proc.stdin.close()
                    else:
                        data = await s.read_chunk()
                        if data is None:
                            raise EOFError
                        if proc.stdin:
                            proc.stdin.write(data)
                            await proc.stdin.drain()
            except (EOFError, ConnectionError, BrokenPipeError):
                if s.closed and proc.returncode is None:
                    # the client went away (adb killed): hang up on the command like adbd does
                    try:
                        os.killpg(proc.pid, signal.SIGHUP)
                    except ProcessLookupError:
                        pass

        feeder = asyncio.create_task(feed())
        pumps = [pump(proc.stdout, SH_STDOUT)] + ([pump(proc.stderr, SH_STDERR)] if v2 else [])
        try:
            await asyncio.gather(*pumps)
            code = await proc.wait()
            if v2:
                await s.write(struct.pack("<BIB", SH_EXIT, 1, code & 0xFF))
        finally:
            feeder.cancel()
            if proc.returncode is None:
                try:
                    os.killpg(proc.pid, signal.SIGHUP)
                except ProcessLookupError:
                    pass

    # ---- sync (push / pull / stat / ls) ---------------------------------------------------------
    async def sync(self, s: Stream) -> None:
        while True:
            ident, n = struct.unpack("<4sI", await s.read_exactly(8))
            arg = (await s.read_exactly(n)).decode(errors="replace") if n else ""
            if ident == b"QUIT":
                return
            if ident == b"STAT":
                try:
                    st = os.stat(self.path(arg))
                    await s.write(b"STAT" + struct.pack("<3I", st.st_mode, st.st_size & 0xFFFFFFFF,
                                                        int(st.st_mtime)))
                except OSError:
                    await s.write(b"STAT" + struct.pack("<3I", 0, 0, 0))
            elif ident == b"LIST":
                await self._list(s, arg)
            elif ident == b"SEND":
                await self._recv_file(s, arg)
            elif ident == b"RECV":
                await self._send_file(s, arg)
            else:
                await self._fail(s, f"unknown sync request {ident!r}")
                return

    async def _fail(self, s: Stream, message: str) -> None:
        data = message.encode()
        await s.write(b"FAIL" + struct.pack("<I", len(data)) + data)

    async def _list(self, s: Stream, arg: str) -> None:
        d = self.path(arg)
        try:
            names = sorted(os.listdir(d))
        except OSError:
            names = []
        for name in [".", ".."] + names:
            try:
                st = os.lstat(d / name)
            except OSError:
                continue
            raw = name.encode()
            await s.write(b"DENT" + struct.pack("<4I", st.st_mode, st.st_size & 0xFFFFFFFF,
                                                int(st.st_mtime), len(raw)) + raw)
        await s.write(b"DONE" + struct.pack("<4I", 0, 0, 0, 0))

    async def _recv_file(self, s: Stream, arg: str) -> None:
        """SEND path,mode: DATA chunks then DONE mtime; written to a temp name and renamed at DONE."""
        path_s, _, mode_s = arg.rpartition(",")
        target = self.path(path_s or arg)
        mode = int(mode_s) if mode_s.isdigit() else 0o644
        error = ""
        tmp = target.with_name(f".{target.name}.adbpart")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fh = open(tmp, "wb")
        except OSError as e:
            fh, error = None, f"cannot write {path_s}: {e.strerror}"
        while True:
            ident, n = struct.unpack("<4sI", await s.read_exactly(8))
            if ident == b"DATA":
                data = await s.read_exactly(n)
                if fh is not None:
                    fh.write(data)
            elif ident == b"DONE":
                mtime = n
                break
            else:
                error = f"unexpected {ident!r} during SEND"
                break
        if fh is not None:
            fh.close()
            if error:
                tmp.unlink(missing_ok=True)
            else:
                os.chmod(tmp, stat.S_IMODE(mode) or 0o644)
                os.utime(tmp, (mtime, mtime))
                os.replace(tmp, target)
        if error:
            await self._fail(s, error)
        else:
            await s.write(b"OKAY" + struct.pack("<I", 0))

    async def _send_file(self, s: Stream, arg: str) -> None:
        try:
            fh = open(self.path(arg), "rb")
        except OSError as e:
            await self._fail(s, f"remote object '{arg}' does not exist or cannot be read: {e.strerror}")
            return
        with fh:
            while chunk := fh.read(SYNC_DATA_MAX):
                await s.write(b"DATA" + struct.pack("<I", len(chunk)) + chunk)
        await s.write(b"DONE" + struct.pack("<I", 0))

    # ---- forwards -------------------------------------------------------------------------------
    async def tcp(self, s: Stream, spec: str) -> None:
        """`adb forward tcp:X tcp:PORT` lands here: connect to the device's PORT and pipe both ways."""
        host, _, port = spec.rpartition(":")
        try:
            reader, writer = await asyncio.open_connection(host or "127.0.0.1", int(port))
        except (OSError, ValueError):
            return      # closing the stream tells the client the connection was refused
        await _pipe(s, reader, writer)

    async def reverse_service(self, s: Stream, request: str) -> None:
        """reverse:forward:tcp:DEV;tcp:HOST, reverse:killforward:tcp:DEV, reverse:killforward-all,
        reverse:list-forward — the replies a device's adbd gives (one OKAY; lists as hex-length strings)."""
        if request == "list-forward":
            text = "".join(f"{self.props.get('ro.serialno', 'standin')} {k} {v}\n"
                           for k, (v, _) in self.reverse.items())
            await s.write(f"{len(text):04x}{text}".encode())
            return
        if request == "killforward-all":
            for _, server in self.reverse.values():
                server.close()
            self.reverse.clear()
            await s.write(b"OKAY")
            return
        if request.startswith("killforward:"):
            entry = self.reverse.pop(request[len("killforward:"):], None)
            if entry is None:
                msg = "listener not found"
                await s.write(f"FAIL{len(msg):04x}{msg}".encode())
                return
            entry[1].close()
            await s.write(b"OKAY")
            return
        if request.startswith("forward:"):
            spec = request[len("forward:"):]
            spec = spec.removeprefix("norebind:")
            local, _, remote = spec.partition(";")
            if not local.startswith("tcp:") or not remote:
                msg = f"unsupported reverse forward {spec}"
                await s.write(f"FAIL{len(msg):04x}{msg}".encode())
                return
            conn = s.conn

            async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                stream = await conn.open_to_host(remote)
                if stream is None:
                    writer.close()
                    return
                try:
                    await _pipe(stream, reader, writer)
                finally:
                    await self._quiet_close(stream)

            if local in self.reverse:
                self.reverse.pop(local)[1].close()
            server = await asyncio.start_server(accepted, "127.0.0.1", int(local[4:]))
            bound = server.sockets[0].getsockname()[1]
            key = f"tcp:{bound}"
            self.reverse[key] = (remote, server)
            reply = b"OKAY"
            if local == "tcp:0":
                reply += f"{len(str(bound)):04x}{bound}".encode()
            await s.write(reply)
            return
        msg = f"unknown reverse request {request}"
        await s.write(f"FAIL{len(msg):04x}{msg}".encode())


async def _pipe(s: Stream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Bytes both ways between an adb stream and a TCP socket until either side closes."""

    async def up() -> None:
        while chunk := await reader.read(256 * 1024):
            await s.write(chunk)

    async def down() -> None:
        while (chunk := await s.read_chunk()) is not None:
            writer.write(chunk)
            await writer.drain()

    tasks = [asyncio.create_task(up()), asyncio.create_task(down())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        writer.close()


async def main_async(args: argparse.Namespace) -> None:
    props = dict(DEFAULT_PROPS)
    for kv in args.prop:
        k, _, v = kv.partition("=")
        props[k] = v
    device = Device(args.root, props)
    Path(args.root).mkdir(parents=True, exist_ok=True)

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await Connection(device, reader, writer).run()

    server = await asyncio.start_server(on_client, args.host, args.port)
    port = server.sockets[0].getsockname()[1]
    if args.port_file:
        tmp = Path(args.port_file + ".tmp")
        tmp.write_text(f"{port}\n")
        tmp.replace(args.port_file)
    print(f"adb stand-in listening on {args.host}:{port} root={device.root}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description="adbd stand-in for tests (adb transport protocol over TCP)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5557, help="0 picks a free port (see --port-file)")
    p.add_argument("--root", default="/", help="directory playing the device's filesystem root for sync:")
    p.add_argument("--prop", action="append", default=[], help="device property NAME=VALUE (getprop)")
    p.add_argument("--port-file", help="write the bound port here")
    args = p.parse_args(argv)
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
