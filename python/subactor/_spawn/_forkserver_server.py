# The `forkserver` backend's server process: imports the runtime (and the user's preload list) once, then forks
# one child actor per request, reaps them and reports each exit status to whoever asked for the child.
#
# Run as `python -m subactor._spawn._forkserver_server` by the first process that spawns with the backend (see
# _forkserver.py), always by fork+exec: no Python runs between that fork and the exec, so the server never
# inherits a subinterpreter or a lock of its creator (conc-anal/fork-and-subinterpreters.md).
#
# Design (everything here is deliberately synchronous and single-threaded):
# - Single thread. The server never runs trio and starts no thread; the modules it preloads must not start one
#   either. Before every fork it checks that it still has exactly one thread (`threading.active_count()` and
#   /proc/self/task, which also sees threads started from C): a fork then copies no lock held by another thread,
#   because there is none. A preload that started a thread makes every request fail with an error naming the
#   threads (the server stays up to say so) instead of forking a child that may deadlock.
# - One request at a time. The server polls its listening socket (SOCK_SEQPACKET: one message is one request,
#   its descriptors attached with SCM_RIGHTS), the pidfds of its children and their requesters' connections.
#   A request is read (bounded by the request timeout), the child forked, and the reply (its pid, plus a pidfd
#   for it) sent before the next connection is accepted; concurrent requesters wait in the listen backlog,
#   never in the server. A request carries no secret: the tree's secret reaches the child in the parent's spawn
#   spec, over the socketpair the parent passed here, which the server never reads.
# - Exit status. The server is its children's OS parent, so only it can reap them. It keeps each request's
#   connection open for the child's life and writes the child's exit status on it once the child's pidfd
#   reports the exit. The pidfd in the reply is opened before the child can be reaped, so it names the child
#   even if the pid is reused later: the requester signals it race-free (signal.pidfd_send_signal).
# - Lifetime. The server watches its creator through a pidfd and exits when the creator's process ends. Its
#   children are left alone then: each watches its actor parent itself (the native orphan watchdog in _entry.py).
# - Ctrl-C. The server ignores SIGINT (a terminal's Ctrl-C reaches the whole process group; the root tears the
#   tree down); each child gets Python's default SIGINT handler back.
from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import json
import os
import select
import signal
import socket
import sys
import threading
import traceback
from typing import Any

# Bounds of one request message (the parent's environment travels in it) and of its descriptors.
MAX_REQUEST_BYTES = 1 << 20
REQUEST_FDS = 3  # the child's channel socket, the write end of its stderr pipe, its stdout


class RequestRefused(Exception):
    """A spawn request the server cannot serve; its text goes back to the requester."""


def thread_problem() -> str | None:
    """Why forking now could copy a lock another thread holds; None when this process has one thread only."""
    tasks = os.listdir('/proc/self/task')
    if threading.active_count() == 1 and len(tasks) == 1:
        return None
    names = [thread.name for thread in threading.enumerate()]
    return (
        f'the fork server has {len(tasks)} OS threads (Python threads: {names!r}) and forks only when it has one '
        '(a fork copies locks other threads hold); a preloaded module started a thread at import: take it out '
        'of the preload list'
    )


class _Kid:
    def __init__(self, pid: int, pidfd: int, conn: socket.socket | None) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self.conn = conn


class Server:
    def __init__(
        self, listen_fd: int, creator_pid: int, path: str, timeout: float, broken: str | None
    ) -> None:
        self.listener = socket.socket(fileno=listen_fd)
        self.listener.setblocking(True)
        self.creator = os.pidfd_open(creator_pid)
        self.path = path
        self.timeout = timeout
        self.broken = broken  # set when preloading failed: every request gets this error
        self.by_pidfd: dict[int, _Kid] = {}
        self.by_conn: dict[int, _Kid] = {}
        self.poll = select.poll()
        self.poll.register(self.listener.fileno(), select.POLLIN)
        self.poll.register(self.creator, select.POLLIN)

    def run(self) -> None:
        while True:
            for fd, _events in self.poll.poll():
                if fd == self.creator:
                    self.close()
                    return
                if fd == self.listener.fileno():
                    self.serve_one()
                elif fd in self.by_pidfd:
                    self.reap(self.by_pidfd[fd])
                elif fd in self.by_conn:
                    self.forget_requester(self.by_conn[fd])

    def close(self) -> None:
        """The creator is gone: stop serving. Children live on (each watches its own actor parent)."""
        self.listener.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass

    def serve_one(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        conn.settimeout(self.timeout)
        fds: list[int] = []
        try:
            try:
                data, fds, flags, _ = socket.recv_fds(conn, MAX_REQUEST_BYTES, REQUEST_FDS + 1)
                request = self.parse(data, fds, flags)
                if self.broken is not None:
                    raise RequestRefused(self.broken)
                problem = thread_problem()
                if problem is not None:
                    raise RequestRefused(problem)
                kid = self.fork(request, fds, conn)
            except (OSError, RequestRefused) as exc:
                with contextlib.suppress(OSError):
                    conn.sendall(json.dumps({'error': str(exc)}).encode())
                conn.close()
                return
        finally:
            for fd in fds:
                os.close(fd)
        try:
            socket.send_fds(conn, [json.dumps({'pid': kid.pid}).encode()], [kid.pidfd])
        except OSError:
            # The requester is gone already: the child, without a parent to talk to, ends on its own.
            kid.conn = None
            conn.close()
        self.by_pidfd[kid.pidfd] = kid
        self.poll.register(kid.pidfd, select.POLLIN)
        if kid.conn is not None:
            self.by_conn[conn.fileno()] = kid
            self.poll.register(conn.fileno(), select.POLLIN)

    @staticmethod
    def parse(data: bytes, fds: list[int], flags: int) -> dict[str, Any]:
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            raise RequestRefused(
                f'request truncated (over {MAX_REQUEST_BYTES} bytes or {REQUEST_FDS} descriptors)'
            )
        if len(fds) != REQUEST_FDS:
            raise RequestRefused(f'a request carries {REQUEST_FDS} descriptors, this one {len(fds)}')
        try:
            request = json.loads(data)
        except ValueError as exc:
            raise RequestRefused(f'request is not JSON: {exc}') from None
        ok = (
            isinstance(request, dict)
            and isinstance(request.get('uid'), list)
            and len(request['uid']) == 2
            and all(isinstance(part, str) for part in request['uid'])
            and isinstance(request.get('method'), str)
            and isinstance(request.get('cwd'), str)
            and isinstance(request.get('env'), dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in request['env'].items())
        )
        if not ok:
            raise RequestRefused(f'malformed request {data[:200]!r}')
        valid: dict[str, Any] = request
        return valid

    def fork(self, request: dict[str, Any], fds: list[int], conn: socket.socket) -> _Kid:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
        pid = os.fork()
        if pid == 0:
            self.become_child(request, fds, conn)  # never returns
        # Opened before the child can be reaped (only we reap it), so it names this child for good.
        return _Kid(pid, os.pidfd_open(pid), conn)

    def become_child(self, request: dict[str, Any], fds: list[int], conn: socket.socket) -> None:
        code = 1
        try:
            # Nothing of the server's survives in the child but the preloaded modules.
            conn.close()
            self.listener.close()
            os.close(self.creator)
            for kid in self.by_pidfd.values():
                os.close(kid.pidfd)
                if kid.conn is not None:
                    kid.conn.close()
            chan_fd, err_fd, out_fd = fds
            os.dup2(out_fd, 1)
            os.dup2(err_fd, 2)
            os.close(out_fd)
            os.close(err_fd)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            os.environ.clear()
            os.environ.update(request['env'])
            os.chdir(request['cwd'])
            from . import _forkserver

            _forkserver.adopt_server(self.path)  # nested spawns with this backend ask the same server
            from .._entry import run_child_from_fd

            code = run_child_from_fd(chan_fd, (request['uid'][0], request['uid'][1]), request['method'])
        except BaseException:
            traceback.print_exc()
        finally:
            for stream in (sys.stdout, sys.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.flush()
            os._exit(code)

    def reap(self, kid: _Kid) -> None:
        pid, status = os.waitpid(kid.pid, os.WNOHANG)
        if pid == 0:
            return  # not exited after all (cannot happen: a pidfd is readable once its process has exited)
        code = os.waitstatus_to_exitcode(status)
        self.poll.unregister(kid.pidfd)
        del self.by_pidfd[kid.pidfd]
        os.close(kid.pidfd)
        if kid.conn is not None:
            with contextlib.suppress(OSError):
                kid.conn.sendall(json.dumps({'status': code}).encode())
            self.forget_requester(kid)

    def forget_requester(self, kid: _Kid) -> None:
        """The requester closed its connection (or was told the status): nobody is left to report to."""
        if kid.conn is None:
            return
        fd = kid.conn.fileno()
        self.poll.unregister(fd)
        del self.by_conn[fd]
        kid.conn.close()
        kid.conn = None


def preload(modules: list[str]) -> str | None:
    """Import `modules` (with the collector off, then frozen, as _child.py does: the children share these objects
    copy-on-write, and a collection in a child would otherwise touch, i.e. copy, every page of them); why the
    server cannot serve, or None."""
    gc.disable()
    try:
        for name in modules:
            try:
                importlib.import_module(name)
            except BaseException as exc:  # reported to every requester
                return f'the fork server could not preload module {name!r}: {type(exc).__name__}: {exc}'
    finally:
        gc.freeze()
        gc.enable()
    return thread_problem()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m subactor._spawn._forkserver_server')
    parser.add_argument(
        '--listen-fd', type=int, required=True, help='the bound, listening SOCK_SEQPACKET socket'
    )
    parser.add_argument('--creator-pid', type=int, required=True, help='exit when this process ends')
    parser.add_argument('--path', required=True, help="the listening socket's path (removed at exit)")
    parser.add_argument('--request-timeout', type=float, required=True, help='bound on reading one request')
    parser.add_argument('--preload', action='append', default=[], help='a module to import before forking')
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    broken = preload(args.preload)
    if broken is not None:
        sys.stderr.write(f'subactor: {broken}\n')
    try:
        server = Server(args.listen_fd, args.creator_pid, args.path, args.request_timeout, broken)
    except ProcessLookupError:
        return 0  # the creator is gone already
    server.run()
    return 0


if __name__ == '__main__':
    sys.exit(main())
