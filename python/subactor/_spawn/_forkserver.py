# The `forkserver` backend, parent side: start the preloaded fork server once per process, ask it for each child.
#
# The server (_forkserver_server.py) is started by fork+exec the first time a process spawns with this backend,
# and serves that process (and every actor it forks, for their own nested spawns) until the process ends. A
# spawn is one SOCK_SEQPACKET connection to it: the request carries the child's uid, the spawn method, our
# environment and working directory, and three descriptors (SCM_RIGHTS): the child's end of a fresh socketpair
# (its channel to us), the write end of its stderr pipe, and our stdout. The reply is the child's pid and a pidfd
# for it; the connection then stays open and the server writes the child's exit status on it when it reaps the
# child. The tree's secret never goes to the server: it reaches the child in our spawn spec, over the socketpair.
from __future__ import annotations

import array
import collections
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import trio

from .._errors import ActorFailure
from .._ipc import Channel, channel_from_socket
from .._rundir import runtime_dir
from ._base import Child, child_env, terminate_then_kill
from ._trio import forward_stderr

if TYPE_CHECKING:
    from .._config import Bounds

#: Extra modules the fork server imports before forking (comma-separated), besides `set_forkserver_preload`'s.
PRELOAD_ENV = 'SUBACTOR_FORKSERVER_PRELOAD'

# What every child imports on its way to Ready: imported once in the server, shared copy-on-write by children.
RUNTIME_PRELOAD = (
    'subactor',
    'subactor._entry',
    'subactor._native',
    'subactor._supervise',
    'subactor._portal',
    'subactor._context',
    'subactor._discovery',
    'subactor._spawn._dispatch',
    'subactor._spawn._forkserver',
)

_TAIL_LINES = 40
_MAX_REPLY_BYTES = 4096


class _Server:
    def __init__(self, path: str, proc: subprocess.Popen[bytes] | None, preload: tuple[str, ...]) -> None:
        self.path = path
        self.proc = proc  # None: the server that forked this process (adopted), not ours to manage
        self.preload = preload

    def gone_detail(self) -> str:
        if self.proc is None:
            return 'the fork server that started this actor'
        status = self.proc.poll()
        state = 'running' if status is None else f'exited with status {status}'
        return f'the fork server (pid {self.proc.pid}, {state})'


_server: _Server | None = None
_user_preload: tuple[str, ...] = ()


def set_forkserver_preload(modules: Iterable[str]) -> None:
    """Name modules the `forkserver` backend's server imports before it forks any actor (in addition to the
    runtime and to $SUBACTOR_FORKSERVER_PRELOAD), so each child starts with them imported: call it before the
    first spawn with that backend. The modules must not start threads at import (the server refuses to fork
    with more than one thread). A child's `enable_modules` are still imported in the child, after the fork."""
    names = tuple(modules)
    for name in names:
        if not isinstance(name, str) or not name:
            raise TypeError(f'set_forkserver_preload() takes module names (non-empty str), not {name!r}')
    global _user_preload
    if _server is not None and _server.proc is not None and _server.proc.poll() is None:
        if _preload_list(names) != _server.preload:
            raise RuntimeError(
                f'the fork server is already running with preload {list(_server.preload)!r}; name the modules '
                f'({list(names)!r}) before the first spawn with the forkserver backend'
            )
    _user_preload = names


def _preload_list(user: tuple[str, ...]) -> tuple[str, ...]:
    from_env = tuple(name.strip() for name in os.environ.get(PRELOAD_ENV, '').split(',') if name.strip())
    return tuple(dict.fromkeys((*RUNTIME_PRELOAD, *from_env, *user)))


def adopt_server(path: str) -> None:
    """In a child the server forked: nested spawns with this backend go to that same server."""
    global _server
    _server = _Server(path, None, ())


def server_pid() -> int | None:
    """The pid of the fork server this process started (None if it started none)."""
    return _server.proc.pid if _server is not None and _server.proc is not None else None


def _ensure_server(bounds: Bounds) -> _Server:
    """The running server, started by fork+exec when there is none (or ours ended)."""
    global _server
    if _server is not None and (_server.proc is None or _server.proc.poll() is None):
        return _server
    preload = _preload_list(_user_preload)
    path = os.path.join(runtime_dir(), f'forkserver-{os.getpid()}-{uuid.uuid4().hex[:12]}.sock')
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        old_umask = os.umask(0o177)
        try:
            listener.bind(path)
        finally:
            os.umask(old_umask)
        # Bound and listening before the server exists: requests queue in the backlog while it starts.
        listener.listen(socket.SOMAXCONN)
        fd = listener.fileno()
        argv = [
            sys.executable,
            '-m',
            'subactor._spawn._forkserver_server',
            '--listen-fd',
            str(fd),
            '--creator-pid',
            str(os.getpid()),
            '--path',
            path,
            '--request-timeout',
            str(bounds.handshake_timeout),
            *(f'--preload={name}' for name in preload),
        ]
        # fork+exec (no Python runs in between): safe with subinterpreters in this process (gh-139759).
        proc = subprocess.Popen(
            argv, pass_fds=(fd,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=child_env()
        )
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    finally:
        listener.close()
    _server = _Server(path, proc, preload)
    return _server


class ForkChild(Child):
    """A child actor forked by the fork server: exit status from the server, signals through our pidfd."""

    def __init__(
        self, name: str, conn: trio.socket.SocketType, pid: int, pidfd: int, stderr_fd: int, bounds: Bounds
    ) -> None:
        self.name = name
        self.pid = pid
        self._conn = conn
        self._pidfd = pidfd
        self._stderr = trio.lowlevel.FdStream(stderr_fd)
        self._bounds = bounds
        self._tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
        self._status: int | None = None
        # trio allows one waiter per fd: one system task watches, every wait() waits on the event.
        self._gone = trio.Event()
        trio.lowlevel.spawn_system_task(self._watch_exit, name=f'forkserver-exit-watch:{pid}')

    async def _watch_exit(self) -> None:
        status = None
        try:
            try:
                data = await self._conn.recv(_MAX_REPLY_BYTES)
                if data:
                    status = json.loads(data)['status']
            except (OSError, ValueError, KeyError, TypeError, trio.ClosedResourceError):
                pass
            if not isinstance(status, int):
                # The server ended before the child: the child's exit is still seen through the pidfd (its
                # status is not: only its OS parent, now init, can reap it).
                status = None
                with contextlib.suppress(OSError, trio.ClosedResourceError):
                    await trio.lowlevel.wait_readable(self._pidfd)
            self._status = status
        finally:
            self._gone.set()

    async def wait(self) -> int | None:
        await self._gone.wait()
        return self._status

    def exited(self) -> bool:
        return self._gone.is_set()

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, OSError):  # exited already (maybe not yet reported)
            signal.pidfd_send_signal(self._pidfd, sig)

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    async def hard_kill(self) -> None:
        if not self.exited():
            await terminate_then_kill(self, self.wait, self._bounds.terminate_timeout, self.name)

    def kill_now(self) -> None:
        if not self.exited():
            self._signal(signal.SIGKILL)

    def failure_detail(self) -> str:
        return ''.join(self._tail)

    async def pump_output(self) -> None:
        await forward_stderr(self._stderr, self._tail)

    def cleanup(self) -> None:
        if not self._gone.is_set():
            return  # still running (abandoned by its supervisor): its exit stays watched
        self._stderr.close()
        self._conn.close()
        os.close(self._pidfd)


def _received_fds(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    fds = array.array('i')
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    return list(fds)


async def spawn_forkserver(uid: tuple[str, str], method: str, bounds: Bounds) -> tuple[Child, Channel]:
    """Ask the fork server for child `uid`; the child and our end of its channel."""
    server = _ensure_server(bounds)
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    err_r, err_w = os.pipe()
    conn = trio.socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    request = json.dumps(
        {'uid': list(uid), 'method': method, 'env': child_env(), 'cwd': os.getcwd()}
    ).encode()
    pidfds: list[int] = []
    try:
        try:
            with trio.fail_after(bounds.handshake_timeout):
                await conn.connect(server.path)
                fds = array.array(
                    'i', [child_sock.fileno(), err_w, sys.__stdout__.fileno() if sys.__stdout__ else 1]
                )
                await conn.sendmsg([request], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds.tobytes())])
                child_sock.close()
                os.close(err_w)
                err_w = -1
                data, ancdata, _flags, _ = await conn.recvmsg(
                    _MAX_REPLY_BYTES, socket.CMSG_SPACE(fds.itemsize)
                )
        except trio.TooSlowError:
            raise ActorFailure(
                f'{server.gone_detail()} did not answer the spawn request for {uid[0]!r} within '
                f'{bounds.handshake_timeout} s'
            ) from None
        except OSError as exc:
            raise ActorFailure(
                f'cannot ask {server.gone_detail()} at {server.path!r} for child {uid[0]!r}: {exc}'
            ) from None
        pidfds = _received_fds(ancdata)
        reply: dict[str, Any] = (
            json.loads(data) if data else {'error': f'{server.gone_detail()} closed the request unanswered'}
        )
        if 'error' in reply:
            raise ActorFailure(f'the fork server could not start child {uid[0]!r}: {reply["error"]}')
        if len(pidfds) != 1 or not isinstance(reply.get('pid'), int):
            raise ActorFailure(f'the fork server answered the spawn of {uid[0]!r} with {data!r}')
    except BaseException:
        for fd in (*pidfds, err_r):
            os.close(fd)
        parent_sock.close()
        conn.close()
        raise
    finally:
        child_sock.close()
        if err_w >= 0:
            os.close(err_w)
    child = ForkChild(uid[0], conn, reply['pid'], pidfds[0], err_r, bounds)
    return child, channel_from_socket(parent_sock, label='child')
