"""Helpers for tests that start real processes: free ports, polling with a deadline, a
redis-server of our own, a loopback TCP proxy that can cut a link. Used by tests/integration and
tests/aws/test_pacing.py. Every process is stopped by its own pid, never by name."""
from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tcp_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True
    return False


def wait_until(predicate, *, timeout: float, what: str, interval: float = 0.05):
    """Poll with a deadline (never a bare sleep); return the predicate's truthy value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


#
# Redis
#

class RedisServer:
    def __init__(self, directory: Path):
        self.binary = shutil.which("redis-server")
        self.port = free_port()
        self.dir = directory
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *, aof: bool = False) -> RedisServer:
        self.proc = subprocess.Popen(
            [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.dir),
             "--save", "", "--appendonly", "yes" if aof else "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_until(lambda: tcp_open(self.port), timeout=10, what="redis-server to listen")
        return self

    def client(self):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)

    def shutdown_nosave(self) -> None:
        """What a restart without persistence does to queued messages: they are gone."""
        # A raw RESP command: redis-py would retry the dropped connection for seconds.
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(b"*2\r\n$8\r\nSHUTDOWN\r\n$6\r\nNOSAVE\r\n")
            sock.recv(100)
        self._reap()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
        self._reap()

    def _reap(self) -> None:
        if self.proc:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        wait_until(lambda: not tcp_open(self.port), timeout=10, what="redis-server to stop")


#
# A TCP proxy that can cut a link (PostgreSQL unreachable for a few seconds)
#

class TcpProxy:
    """Loopback proxy in a thread. cut(): drop every open connection and refuse new ones until restore()."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = free_port()
        self.cut_event = threading.Event()
        self._writers: set = set()
        self._loop = asyncio.new_event_loop()
        self._server = None
        self._thread = threading.Thread(target=self._run, name="tcp-proxy", daemon=True)
        self._ready = threading.Event()

    def start(self) -> TcpProxy:
        self._thread.start()
        self._ready.wait(5)
        return self

    def _run(self):
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, reader, writer):
        if self.cut_event.is_set():
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))

        async def pump(source, sink):
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                sink.transport.abort()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        self._writers.difference_update((writer, up_writer))

    def cut(self) -> None:
        self.cut_event.set()

        def abort_all():
            for writer in list(self._writers):
                writer.transport.abort()
        self._loop.call_soon_threadsafe(abort_all)

    def restore(self) -> None:
        self.cut_event.clear()

    def stop(self) -> None:
        self.cut()

        def shutdown():
            self._server.close()
            self._loop.stop()
        self._loop.call_soon_threadsafe(shutdown)
        self._thread.join(5)
