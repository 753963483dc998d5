# The `subint` backend: each child actor runs its own trio.run() in a legacy subinterpreter on a dedicated thread.
#
# Design (see ../shared notes on 3.14 subinterpreters and conc-anal/):
# - The native driver owns the thread: it creates the interpreter, runs the bootstrap below, ends the interpreter
#   on that same thread and makes `exit_fd` readable. The parent waits on that fd from trio: no polling, and no
#   trio worker thread ever holds a subinterpreter thread state.
# - Parent and child talk over a socketpair made here; the child end's fd number is written into the bootstrap
#   (the interpreters share the process's fd table), so there is no listener, address or connect-back.
# - Hard kill, every step bounded by Bounds: a byte on a kill socket makes a child whose loop runs abort every
#   task (shielded ones too) and acknowledge; a child busy in Python code gets exceptions injected into its
#   threads (backing off over `interrupt_join_timeout`) until its loop runs and acknowledges; a thread still
#   running after that is stuck in C: it is abandoned (reported, never destroyed from here, never blocking exit).
# - Warm start: a bounded pool of interpreters that already imported the runtime and block on a pipe for their
#   assignment (fd, name, uuid). Taking one starts a replacement at once, so spawning faster than the pool refills
#   just means waiting on a still-importing interpreter. Each pooled interpreter serves exactly one actor.
from __future__ import annotations

import collections
import logging
import os
import socket
import sys
from typing import TYPE_CHECKING, Any

import trio

from .._ipc import Channel, channel_from_socket
from ._base import Child

if TYPE_CHECKING:
    from .._config import Bounds

log = logging.getLogger('subactor')

# Interpreters kept warm (pre-imported) in the root actor's process; 0 disables the pool.
DEFAULT_POOL_SIZE = int(os.environ.get('SUBACTOR_SUBINT_POOL', '4'))

# The parent keeps its copy of the child's socket end until the handshake, so a child that dies before taking
# it leaks nothing: the child works on its own dup.
_COLD_BOOTSTRAP = """\
import os as _os, sys as _sys
_sys.path[:0] = [_p for _p in {sys_path!r} if _p not in _sys.path]
_fd, _kill = _os.dup({fd}), _os.dup({kill_fd})
from subactor._spawn._subint import child_bootstrap
child_bootstrap(_fd, {name!r}, {uuid!r}, _kill)
"""

_WARM_BOOTSTRAP = """\
import sys as _sys
_sys.path[:0] = [_p for _p in {sys_path!r} if _p not in _sys.path]
_r = {read_fd}
import subactor._spawn._subint as _subint
_subint.warm_imports()
_assignment = _subint.read_assignment(_r)
if _assignment is not None:
    _subint.child_bootstrap(*_assignment)
"""


def _native() -> Any:
    from .. import _driver

    return _driver


def current_interp_id() -> int | None:
    try:
        import _interpreters

        return int(_interpreters.get_current()[0])
    except (ImportError, AttributeError, TypeError, IndexError):
        return None


def child_bootstrap(fd: int, name: str, uuid: str, kill_fd: int) -> None:
    """Runs inside the child interpreter: serve as actor (name, uuid) on the inherited socket fd; a byte on
    kill_fd ends its trio.run at once, shielded tasks included."""
    from .. import _entry

    code = _entry.run_child_from_fd(
        fd, (name, uuid), 'subint', interp_id=current_interp_id(), kill_fd=kill_fd
    )
    if code:
        raise SystemExit(code) from _entry.last_exit_cause


def warm_imports() -> None:
    """What a pooled interpreter imports ahead of its assignment: the whole child runtime."""
    import msgspec  # noqa: F401
    import trio  # noqa: F401

    from .. import _entry, _supervise  # noqa: F401


def read_assignment(read_fd: int) -> tuple[int, str, str, int] | None:
    """Block (GIL released) until the parent assigns this pooled interpreter; None when the pool closes."""
    data = b''
    try:
        while not data.endswith(b'\n'):
            chunk = os.read(read_fd, 4096)
            if not chunk:
                return None
            data += chunk
    finally:
        os.close(read_fd)
    fd, name, uuid, kill_fd = data.decode().rstrip('\n').split('\x00')
    return os.dup(int(fd)), name, uuid, os.dup(int(kill_fd))


class SubintChild(Child):
    """A child actor in a subinterpreter on its own driver thread."""

    def __init__(
        self,
        handle: Any,
        bounds: Bounds,
        child_sock: socket.socket,
        kill_socks: tuple[socket.socket, socket.socket],
    ) -> None:
        self.handle = handle
        self._bounds = bounds
        self._child_sock = child_sock
        # The kill socketpair: we keep `_kill` and send kill bytes on it; the child works on a dup of
        # `_kill_child_end` (ours is closed after the handshake) and answers each byte with an acknowledgement.
        self._kill, self._kill_child_end = kill_socks
        # Set when the thread is done (exit_fd readable) or abandoned. One system task watches the fd: trio
        # allows a single waiter per fd, and a system task outlives any cancel scope of the waiters.
        self._gone = trio.Event()
        trio.lowlevel.spawn_system_task(self._watch_exit, name=f'subint-exit-watch:{handle.name}')

    async def _watch_exit(self) -> None:
        try:
            await trio.lowlevel.wait_readable(self.handle.exit_fd)
            if self.abandoned and self.handle.join(0):
                # An abandoned thread that got out of its C call after all: nobody else will release it.
                self.handle.close()
        finally:
            self._gone.set()

    @property
    def interp_id(self) -> int | None:  # type: ignore[override]
        return self.handle.id

    async def wait(self) -> int | None:
        await self._gone.wait()
        if self.abandoned:
            return None
        outcome = self.handle.outcome
        if outcome is None:
            return None
        if outcome.ok:
            return outcome.exit_code or 0
        return outcome.exit_code if outcome.exit_code is not None else 1

    def exited(self) -> bool:
        return self.abandoned or self.handle.outcome is not None

    async def hard_kill(self) -> None:
        """Reclaim the child, every step bounded (conc-anal/hard-kill-of-a-shielded-subint-child.md):

        1. Send a kill byte. A child whose trio loop runs acknowledges it at once and throws HardKilled into
           every task parked at a checkpoint, shielded or not, so its cleanup runs and it ends within
           milliseconds.
        2. No acknowledgement within `kill_ack_grace`: the loop is busy in Python code. Inject an exception
           into its threads, backing off (T/7, 2T/7, 4T/7 of `interrupt_join_timeout` T for three attempts),
           with a byte each time. Never inject into a loop that acknowledged: an exception landing inside trio's
           own machinery while it unwinds can wedge the loop.
        3. Acknowledged but still running after a backoff step: a task that was runnable (not parked) when the
           byte came was not reached, and may now spin. Send another byte; no acknowledgement means step 2.
        4. Still running when T is spent: the thread is stuck in C; it is abandoned (never destroyed from here).
        """
        with trio.CancelScope(shield=True):
            if self.exited():
                return
            deadline = trio.current_time() + self._bounds.interrupt_join_timeout
            attempts = max(1, int(self._bounds.interrupt_attempts))
            unit = self._bounds.interrupt_join_timeout / (2**attempts - 1)
            self._send_kill_byte()
            acked = await self._ack_within(self._bounds.kill_ack_grace)
            step = 0
            while not self._gone.is_set() and trio.current_time() < deadline:
                wait = min(unit * 2 ** min(step, attempts - 1), max(0.0, deadline - trio.current_time()))
                step += 1
                if acked:
                    # Its loop runs: a short look (unwinding takes tens of ms), then another byte, which an
                    # unwinding loop acknowledges again and a loop now spinning does not.
                    with trio.move_on_after(min(wait, 5 * self._bounds.kill_ack_grace)):
                        await self._gone.wait()
                    if self._gone.is_set():
                        break
                    self._send_kill_byte()
                    acked = await self._ack_within(self._bounds.kill_ack_grace)
                    continue
                if not self.handle.interrupt('KeyboardInterrupt'):
                    break  # finished meanwhile
                self._send_kill_byte()
                acked = await self._ack_within(wait)
            with trio.move_on_at(deadline):
                await self._gone.wait()
            if self.handle.outcome is not None:
                return
            log.warning(
                'subint child %r (interpreter %s) did not end within %.2f s of its hard kill (%s): its thread is '
                'stuck in C; abandoning it',
                self.handle.name,
                self.handle.id,
                self._bounds.interrupt_join_timeout,
                'its loop acknowledged the kill' if acked else 'its loop never ran',
            )
            self.handle.abandon()
            self.abandoned = True
            self._gone.set()

    async def _ack_within(self, seconds: float) -> bool:
        """True if the child acknowledged a kill byte within `seconds`; False if it ended or stayed silent."""
        acked = False
        with trio.move_on_after(seconds):
            async with trio.open_nursery() as n:

                async def wait_ack() -> None:
                    nonlocal acked
                    await trio.lowlevel.wait_readable(self._kill)
                    try:
                        acked = bool(self._kill.recv(64))
                    except OSError:
                        pass
                    n.cancel_scope.cancel()

                async def wait_gone() -> None:
                    await self._gone.wait()
                    n.cancel_scope.cancel()

                n.start_soon(wait_ack)
                n.start_soon(wait_gone)
        return acked

    def kill_now(self) -> None:
        # The byte only: an exception injected into a loop that is unwinding can wedge it (see hard_kill). A child
        # busy in Python code is interrupted by our own interpreter's exit sweep (_driver's atexit hook).
        if not self.exited():
            self._send_kill_byte()

    def _send_kill_byte(self) -> None:
        try:
            self._kill.send(b'k')
        except OSError:
            pass  # the buffer is full (the child is not reading: the injected exception is for that) or it is gone

    def failure_detail(self) -> str:
        outcome = self.handle.outcome
        if outcome is None or outcome.ok:
            return ''
        return outcome.traceback or f'{outcome.exc_type}: {outcome.exc_message}'

    def after_handshake(self) -> None:
        self._child_sock.close()
        self._kill_child_end.close()

    def cleanup(self) -> None:
        self._child_sock.close()
        self._kill_child_end.close()
        self._kill.close()
        if self.handle.outcome is not None:
            self.handle.join(0)
            self.handle.close()


class _WarmPool:
    """Interpreters that imported the runtime ahead of demand, each waiting on a pipe for one assignment."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._idle: collections.deque[tuple[Any, int]] = collections.deque()

    def fill(self) -> None:
        driver = _native()
        while len(self._idle) < self.size:
            read_fd, write_fd = os.pipe()
            try:
                handle = driver.spawn(
                    _WARM_BOOTSTRAP.format(read_fd=read_fd, sys_path=_sys_path()), name='subint-warm'
                )
            except BaseException:
                os.close(read_fd)
                os.close(write_fd)
                raise
            self._idle.append((handle, write_fd))

    def take(self) -> tuple[Any, int] | None:
        if not self._idle:
            return None
        entry = self._idle.popleft()
        self.fill()
        return entry

    def close(self, timeout: float) -> None:
        """Release every idle interpreter (EOF on its pipe ends it) and join them within `timeout`."""
        idle, self._idle = self._idle, collections.deque()
        for _, write_fd in idle:
            os.close(write_fd)
        for handle, _ in idle:
            if handle.join(timeout):
                handle.close()


_pool: _WarmPool | None = None
_pool_configured = False  # set_warm_pool_size() was called: never fall back to the default pool


def set_warm_pool_size(size: int) -> None:
    """Keep `size` pre-imported interpreters ready for subint spawns in this process (0 disables)."""
    global _pool, _pool_configured
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError(f'warm pool size must be a non-negative int, not {size!r}')
    _pool_configured = True
    if _pool is not None:
        _pool.close(timeout=5.0)
    _pool = _WarmPool(size) if size else None
    if _pool is not None:
        _register_pool_closer()
        _pool.fill()


_closer_registered = False


def _register_pool_closer() -> None:
    """Close the pool at exit, before the driver's own exit hook (atexit runs the later-registered first):
    pooled interpreters wait in os.read, which only the pipe's EOF ends."""
    global _closer_registered
    if not _closer_registered:
        import atexit

        _native()  # make sure the driver's hook is registered first
        atexit.register(close_warm_pool)
        _closer_registered = True


def close_warm_pool(timeout: float = 5.0) -> None:
    global _pool
    if _pool is not None:
        _pool.close(timeout)
        _pool = None


def _take_warm() -> tuple[Any, int] | None:
    global _pool
    if _pool is None:
        # Only the root interpreter keeps a pool by default; nested actors spawn cold unless asked.
        if _pool_configured or current_interp_id() not in (0, None) or DEFAULT_POOL_SIZE == 0:
            return None
        set_warm_pool_size(DEFAULT_POOL_SIZE)
        assert _pool is not None
    return _pool.take()


def _sys_path() -> list[str]:
    return [p for p in sys.path if p]


async def spawn_subint(uid: tuple[str, str], bounds: Bounds) -> tuple[Child, Channel]:
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    name, uuid = uid
    child_fd = child_sock.fileno()
    kill, kill_child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    kill.setblocking(False)  # a kill byte never blocks the parent
    kill_r = kill_child_end.fileno()
    try:
        warm = _take_warm()
        if warm is not None:
            handle, write_fd = warm
            try:
                os.write(write_fd, f'{child_fd}\x00{name}\x00{uuid}\x00{kill_r}\n'.encode())
            finally:
                os.close(write_fd)
        else:
            code = _COLD_BOOTSTRAP.format(
                fd=child_fd, name=name, uuid=uuid, kill_fd=kill_r, sys_path=_sys_path()
            )
            handle = _native().spawn(code, name=name)
    except BaseException:
        parent_sock.close()
        child_sock.close()
        kill.close()
        kill_child_end.close()
        raise
    child = SubintChild(handle, bounds, child_sock, (kill, kill_child_end))
    return child, channel_from_socket(parent_sock, label='child')
