# The `mp_spawn` and `mp_forkserver` backends: child actors started by multiprocessing, linked by a one-shot socket.
#
# multiprocessing cannot hand a connected socket to a spawned child portably, so the parent binds a private Unix
# socket (0600, in the per-user runtime directory) for exactly one connection, passes its path, accepts the child
# and removes it. The fork server is itself started with fork+exec (not a bare fork), so it never inherits a
# subinterpreter; see conc-anal/fork-and-subinterpreters.md.
from __future__ import annotations

import contextlib
import multiprocessing
import os
import socket
import sys
import tempfile
import traceback
import uuid
from typing import TYPE_CHECKING, Any

import trio

from .._errors import ActorFailure
from .._ipc import Channel, channel_from_socket
from .._rundir import runtime_dir
from ._base import Child, terminate_then_kill

if TYPE_CHECKING:
    from .._config import Bounds

_CONTEXTS = {'mp_spawn': 'spawn', 'mp_forkserver': 'forkserver'}
_preloaded = False


class MpChild(Child):
    """A child actor in a multiprocessing.Process; exit is awaited on the process sentinel (no polling)."""

    def __init__(self, proc: multiprocessing.process.BaseProcess, bounds: Bounds, tail_path: str) -> None:
        self.proc = proc
        self.pid = proc.pid
        self._bounds = bounds
        self._tail_path = tail_path
        # trio allows one waiter per fd: one system task watches the sentinel, every wait() waits on the event.
        self._gone = trio.Event()
        trio.lowlevel.spawn_system_task(self._watch_exit, name=f'mp-exit-watch:{proc.name}')

    async def _watch_exit(self) -> None:
        try:
            await trio.lowlevel.wait_readable(self.proc.sentinel)
            # The sentinel closes as the child exits, a moment before it can be reaped: this join returns at
            # once in practice, and is bounded anyway.
            self.proc.join(self._bounds.terminate_timeout)
        finally:
            self._gone.set()

    async def wait(self) -> int | None:
        await self._gone.wait()
        return self.proc.exitcode

    def exited(self) -> bool:
        return self.proc.exitcode is not None

    async def hard_kill(self) -> None:
        if not self.exited():
            await terminate_then_kill(self.proc, self.wait, self._bounds.terminate_timeout, self.proc.name)

    def kill_now(self) -> None:
        if not self.exited():
            with contextlib.suppress(OSError, ValueError):
                self.proc.kill()

    def failure_detail(self) -> str:
        try:
            with open(self._tail_path, encoding='utf-8', errors='replace') as f:
                return ''.join(f.readlines()[-40:])
        except OSError:
            return ''

    def cleanup(self) -> None:
        if not self._gone.is_set():
            return  # still running (abandoned by its supervisor): its sentinel stays watched
        try:
            os.unlink(self._tail_path)
        except OSError:
            pass
        if self.exited():
            self.proc.close()


# The stderr tail file of an mp child is kept under this size (it is rewritten to its last quarter past it).
TAIL_FILE_MAX_BYTES = 256 * 1024


class _StderrTail:
    """The mp child's sys.stderr: writes go to the real stderr and, line by line, to the tail file the parent
    reads when the child fails (multiprocessing gives the parent no pipe to the child's stderr). Written
    through, so the tail survives os._exit and SIGKILL."""

    def __init__(self, real: Any, path: str) -> None:
        self._real = real
        self._path = path
        self._file = open(path, 'a', encoding='utf-8', errors='replace')  # noqa: SIM115 (lives as long as we do)

    def write(self, text: str) -> int:
        self._real.write(text)
        self._file.write(text)
        if '\n' in text:
            self._file.flush()
            if self._file.tell() > TAIL_FILE_MAX_BYTES:
                self._shrink()
        return len(text)

    def _shrink(self) -> None:
        self._file.close()
        with open(self._path, 'rb') as f:
            f.seek(-TAIL_FILE_MAX_BYTES // 4, os.SEEK_END)
            keep = f.read()
        with open(self._path, 'wb') as f:
            f.write(keep)
        self._file = open(self._path, 'a', encoding='utf-8', errors='replace')  # noqa: SIM115

    def flush(self) -> None:
        self._real.flush()
        self._file.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _child_entry(sock_path: str, uid: tuple[str, str], method: str, tail_path: str) -> None:
    """Runs in the child process: connect to the parent's one-shot socket and serve as an actor."""
    import gc

    from .._entry import run_child_from_fd

    gc.freeze()  # as _child.main does: the runtime imported (to unpickle this call) is out of every collection

    if sys.stderr is not None:
        sys.stderr = _StderrTail(sys.stderr, tail_path)
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(sock_path)
        code = run_child_from_fd(sock.detach(), uid, method)
    except BaseException:
        traceback.print_exc()
        code = 1
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    os._exit(code)


async def spawn_mp(uid: tuple[str, str], method: str, bounds: Bounds) -> tuple[Child, Channel]:
    global _preloaded
    ctx: Any = multiprocessing.get_context(_CONTEXTS[method])  # typeshed's BaseContext lacks Process
    if method == 'mp_forkserver' and not _preloaded:
        # The server imports the runtime once; each fork then starts warm.
        ctx.set_forkserver_preload(['subactor._entry', 'subactor._spawn._mp'])
        _preloaded = True
    sock_path = os.path.join(runtime_dir(), f'spawn-{uuid.uuid4().hex[:16]}.sock')
    fd, tail_path = tempfile.mkstemp(prefix=f'subactor-{uid[0][:20]}-', suffix='.log')
    os.close(fd)
    listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        await listener.bind(sock_path)
    finally:
        os.umask(old_umask)
    listener.listen(1)
    try:
        proc = ctx.Process(
            target=_child_entry, args=(sock_path, uid, method, tail_path), name=uid[0], daemon=False
        )
        # Blocks for the fork server's round trip or the fork+exec: about a millisecond, no thread needed.
        proc.start()
        child = MpChild(proc, bounds, tail_path)
        with trio.move_on_after(bounds.handshake_timeout):
            async with trio.open_nursery() as n:

                async def watch_exit() -> None:
                    await child.wait()
                    n.cancel_scope.cancel()

                n.start_soon(watch_exit)
                conn, _ = await listener.accept()
                n.cancel_scope.cancel()
                return child, channel_from_socket(socket.socket(fileno=conn.detach()), label='child')
        await child.hard_kill()
        raise ActorFailure(
            f'child {uid[0]!r} ({method}) never connected back (exit status {proc.exitcode})',
            exit_status=proc.exitcode,
            stderr_tail=child.failure_detail(),
        )
    finally:
        listener.close()
        try:
            os.unlink(sock_path)
        except OSError:
            pass
