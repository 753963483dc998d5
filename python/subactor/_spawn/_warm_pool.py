# The subint warm pool: interpreters created, pre-imported and warmed up ahead of demand, one actor each.
#
# Design:
# - A pooled interpreter imports the child runtime and starts the trio.run its actor will use: it runs the code
#   paths of a handshake once (so the real one pays no first-use costs), writes a readiness line on its control
#   socket (naming the fds its waiting loop holds, for the leak gate) and sleeps in its loop (GIL released)
#   until the assignment arrives there: the fds of its actor's channel and kill socket, its name and uuid.
#   It then serves as that actor in the same trio.run. EOF instead means the pool closed: it ends unused.
# - The parent learns readiness by reading that line: without waiting (`status()`), with trio
#   (`wait_ready()`) or blocking (`settle()`, for code outside trio such as the leak gate). Nothing polls.
# - Refill is deferred: taking an interpreter does not start its replacement, because a replacement's import
#   (~120 ms of shared-GIL time) would compete with the very handshake the pool exists to speed up. The pool
#   refills when the last warm spawn in flight has handed its portal to the caller, or at once when a spawn
#   finds it empty (that spawn is cold anyway). Spawning faster than the pool refills just means cold spawns.
# - One interpreter warms at a time: N imports at once would leave the application's own loop about 1/(N+1)
#   of the shared GIL (each importer holds it for the 5 ms switch interval in turn) and make none of them ready
#   sooner; one at a time leaves it half and readies the first after one import. Within a trio run a system
#   task starts the next when one is ready; outside one (the pool outlives trio.run), the next fill() does.
# - Only the root interpreter keeps a pool by default; each pooled interpreter serves exactly one actor. A ready
#   one is lent to the driver's shelf (a native, process-wide list: a pooled interpreter is a handle and file
#   descriptors, which belong to the whole process), where any interpreter spawning subint children takes it:
#   nested actors spawn warm too. A take from the shelf is in flight until the taker's spawn completes, and
#   the pool refills once nothing is (the shelf's eventfd wakes it: a system task in the root's trio run).
from __future__ import annotations

import collections
import dataclasses
import logging
import os
import select
import socket
import sys
import time
from typing import Any

import trio

log = logging.getLogger('subactor')

# Interpreters kept warm in the root actor's process by default; 0 disables the pool (env SUBACTOR_SUBINT_POOL).
DEFAULT_POOL_SIZE = int(os.environ.get('SUBACTOR_SUBINT_POOL', '4'))

# The parent keeps the control socket's child end open (detached, not closed) until the interpreter has read
# its assignment; the interpreter closes it. If the import below fails, the bootstrap closes it itself.
_WARM_BOOTSTRAP = """\
import os as _os, sys as _sys
try:
    _sys.path[:0] = [_p for _p in {sys_path!r} if _p not in _sys.path]
    from subactor._spawn._warm_pool import serve_pooled
except BaseException:
    _os.close({control_fd})
    raise
serve_pooled({control_fd})
"""

_READY = b'R'
# How long a pooled interpreter that closed its control socket unready gets to end before we stop watching it.
_DISCARD_JOIN_TIMEOUT = 1.0


# --- inside a pooled interpreter -------------------------------------------------------------------------------


def serve_pooled(control_fd: int) -> None:
    """This interpreter's whole life in the pool: one trio.run that warms up, says so, waits for its
    assignment and then serves as that actor (or ends quietly if the pool closed)."""
    import gc

    gc.disable()  # see _child.main: no collections while importing the runtime, what it built frozen afterwards
    try:
        warm_imports()
        from .. import _entry
        from ._subint import current_interp_id
    except BaseException:
        os.close(control_fd)
        raise
    finally:
        gc.freeze()
        gc.enable()
    control = _ControlFd(control_fd)
    try:
        code = _entry.run_child(_pooled_main, control, interp_id=current_interp_id())
    finally:
        control.close()  # also when an exception injected into trio's own code ended the run around the task
    if code:
        raise SystemExit(code) from _entry.last_exit_cause


def warm_imports() -> None:
    """What a pooled interpreter imports ahead of its assignment: the whole child runtime and the driver."""
    import _interpreters  # noqa: F401  (what current_interp_id() reads)

    import msgspec  # noqa: F401

    from .. import _driver, _entry, _supervise  # noqa: F401
    from . import _subint  # noqa: F401


class _ControlFd:
    """This interpreter's end of its control socket, closed exactly once (by the task, or after the run)."""

    __slots__ = ('fd',)

    def __init__(self, fd: int) -> None:
        self.fd: int | None = fd

    def close(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)


async def _pooled_main(control: _ControlFd) -> None:
    """Warm up, send the readiness line, sleep until the assignment (or EOF), then serve as that actor in this
    same trio.run, so the assignment finds trio's loop already running."""
    from .. import _entry
    from ._subint import current_interp_id

    assert control.fd is not None
    try:
        await _warm_up()
        try:
            os.write(control.fd, _READY + ','.join(map(str, _idle_loop_fds())).encode() + b'\n')
        except OSError:
            return  # the pool closed while this interpreter warmed up
        assignment = await _read_assignment(control.fd)
    finally:
        control.close()
    if assignment is not None:
        fd, name, uuid, kill_fd = assignment
        await _entry.serve_child(fd, (name, uuid), 'subint', current_interp_id(), kill_fd)


def _idle_loop_fds() -> list[int]:
    """The descriptors this interpreter's running trio loop holds while it waits (its epoll and its two wake-up
    socketpairs), for the parent's leak accounting. Read from trio's internals; none if they changed shape
    (the leak gate then reports them, which is how we would learn)."""
    try:
        runner = trio._core._run.GLOBAL_RUN_CONTEXT.runner
        io = runner.io_manager
        pairs = (runner.entry_queue.wakeup, io._force_wakeup)
        return [io._epoll.fileno()] + [s.fileno() for p in pairs for s in (p.wakeup_sock, p.write_sock)]
    except AttributeError:
        return []


async def _warm_up() -> None:
    """Run the code paths of a child's handshake once (trio's start-up, a socket channel's encoder and decoder,
    a listener, a nursery), so the real handshake finds them specialised and their lazy set-up done."""
    from .._ipc import channel_from_socket, default_bind_addr, listen
    from .._msg import Hello, Ready

    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    near, far = channel_from_socket(a), channel_from_socket(b)
    listener = await listen(default_bind_addr('tcp', 'warm-up', '0'))
    try:
        async with trio.open_nursery() as nursery:

            async def echo_twice(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                task_status.started()
                for _ in range(2):
                    await far.send(await far.recv())

            await nursery.start(echo_twice)
            await near.send(Hello(['warm-up', '0'], os.getpid(), None, ['tcp', '127.0.0.1', 1]))
            await near.recv()
            await near.send(Ready(['tcp', '127.0.0.1', 1]))
            await near.recv()
    finally:
        await listener.aclose()
        await near.aclose()
        await far.aclose()


async def _read_assignment(control_fd: int) -> tuple[int, str, str, int] | None:
    """Sleep until the parent assigns this interpreter: (channel fd, name, uuid, kill fd), both fds our own
    dups; None when the pool closes instead."""
    data = b''
    while not data.endswith(b'\n'):
        await trio.lowlevel.wait_readable(control_fd)
        chunk = os.read(control_fd, 4096)
        if not chunk:
            return None
        data += chunk
    fd, name, uuid, kill_fd = data.decode().rstrip('\n').split('\x00')
    return os.dup(int(fd)), name, uuid, os.dup(int(kill_fd))


# --- in the parent ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class WarmPoolStatus:
    """The warm pool at one moment: its target `size`, interpreters `ready` to serve a spawn at once, and those
    still `warming` (importing: at most one at a time). `ready + warming` is below `size` while the pool fills
    or a refill is deferred."""

    size: int
    ready: int
    warming: int


class _Pooled:
    """One idle pooled interpreter: its driver handle and our end of its control socket."""

    __slots__ = (
        '_line',
        '_watched',
        'child_control_fd',
        'control',
        'from_idle',
        'handle',
        'loop_fds',
        'ready',
    )

    def __init__(self, handle: Any, control: socket.socket, child_control_fd: int) -> None:
        self.handle = handle
        self.control = control
        self.child_control_fd = child_control_fd
        self.ready = False
        self.from_idle = False  # taken from its pool's own list, not from the shelf
        self.loop_fds: tuple[int, ...] = ()  # what its waiting trio loop holds (from its readiness line)
        self._line = b''
        self._watched: trio.Event | None = None  # set when the task waiting on `control` stops waiting

    @classmethod
    def from_shelf(cls, item: tuple[Any, int, list[int]]) -> _Pooled:
        """A ready interpreter taken from the shelf: (handle, control fd, [child control fd, loop fds...])."""
        handle, control_fd, held = item
        entry = cls(handle, socket.socket(fileno=control_fd), held[0])
        entry.loop_fds = tuple(held[1:])
        entry.ready = True
        return entry

    def check_ready(self) -> bool | None:
        """Read its readiness line if it is there: True (ready), False (not yet), None (it ended instead)."""
        while not self.ready:
            try:
                data = self.control.recv(64, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return False
            except OSError:
                return None
            if not data:
                return None
            self._line += data
            if self._line.endswith(b'\n'):
                if not self._line.startswith(_READY):
                    return None
                fds = self._line[len(_READY) : -1].decode()
                self.loop_fds = tuple(int(fd) for fd in fds.split(',') if fd)
                self.ready = True
        return True

    async def wait_ready(self) -> bool:
        """Sleep until it is ready (True) or has ended (False). Any number of tasks may wait: one waits on the
        socket (trio allows one waiter per fd), the others on it. The socket may be let go of meanwhile (lent,
        assigned, closed: see `_let_go`), which wakes the waiter with ClosedResourceError; the state read after
        that is the answer (lent means it was ready)."""
        while (state := self.check_ready()) is False:
            if self._watched is not None:
                await self._watched.wait()
                continue
            self._watched = trio.Event()
            try:
                await trio.lowlevel.wait_readable(self.control)
            except trio.ClosedResourceError:
                pass  # let go of by another task: check_ready() now says what became of it
            finally:
                watched, self._watched = self._watched, None
                watched.set()
        return bool(state)

    def _let_go(self) -> None:
        """Before our control socket is detached or closed: wake the task waiting on it, if any, and drop the fd
        from this trio run's epoll set. Without this the waiter keeps trio's registration of the fd *number*,
        which the next socket to get that number inherits: its first reader fails with BusyResourceError, and
        the stale waiter wakes on a stranger's data (conc-anal/warm-pool-fd-reuse.md)."""
        if self._watched is not None and self.control.fileno() >= 0 and trio.lowlevel.in_trio_run():
            trio.lowlevel.notify_closing(self.control)

    def detach_control(self) -> int:
        """Give up our end of the control socket without closing it (it goes on the shelf): its fd number."""
        self._let_go()
        return self.control.detach()

    def close_control(self) -> None:
        self._let_go()
        self.control.close()

    def assign(self, channel_fd: int, name: str, uuid: str, kill_fd: int) -> None:
        """Tell it what to serve; our end of the control socket is closed either way."""
        try:
            self.control.sendall(f'{channel_fd}\x00{name}\x00{uuid}\x00{kill_fd}\n'.encode())
        finally:
            self.close_control()

    def release(self, timeout: float) -> bool:
        """End it unassigned (EOF on its control socket) and join it within `timeout`; True if it ended. A handle
        that is done but still finalizing is released too (the driver closes it when it finishes)."""
        self.close_control()
        ended: bool = self.handle.join(timeout)
        if ended or self.handle.outcome is not None:
            self.handle.close()
        return ended


def _native() -> Any:
    from .. import _native as native

    return native


def _take_from_shelf() -> _Pooled | None:
    """A lent interpreter that is still waiting for its assignment, or None when the shelf is empty. One that
    ended while lent (nothing watches the shelf) is released and the next one taken."""
    native = _native()
    while (item := native.shelf_take()) is not None:
        entry = _Pooled.from_shelf(item)
        if entry.handle.outcome is None:
            return entry
        log.warning('a lent warm-pool interpreter (%s) had ended: %s', entry.handle.id, entry.handle.outcome)
        native.shelf_done()
        entry.release(0.0)
    return None


class _WarmPool:
    """Up to `size` pooled interpreters of this process: warming here (`_idle`, at most one importing), ready on
    the shelf (see the module comment for the refill policy)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._idle: collections.deque[_Pooled] = collections.deque()  # not yet lent: warming, or just ready
        self._in_flight = 0  # warm spawns taken from `_idle` whose portal is not yet with the caller
        self._warming: _Pooled | None = None  # the one interpreter importing now (one at a time)
        self._closed = False
        self._watching: Any = None  # the trio run whose system task watches the shelf's takes
        self._lender = _native().current_interpreter_id()  # the shelf tells our lent interpreters apart by it

    def _lend_ready(self) -> None:
        """Put every ready interpreter of `_idle` on the shelf, where any interpreter may take it."""
        for entry in [e for e in self._idle if e.check_ready()]:
            self._idle.remove(entry)
            if self._warming is entry:
                self._warming = None
            _native().shelf_put(
                entry.handle, entry.detach_control(), [entry.child_control_fd, *entry.loop_fds]
            )

    def _lent(self) -> list[tuple[Any, int, list[int]]]:
        """What this pool lent and nobody has taken yet: (handle, control fd, held fds) each."""
        lent: list[tuple[Any, int, list[int]]] = _native().shelf_items(lender=self._lender)
        return lent

    def _short(self) -> bool:
        lent: int = _native().shelf_count(lender=self._lender)
        return len(self._idle) + lent < self.size

    def fill(self) -> None:
        """Lend what is ready, then start the next interpreter if the pool is short and none is warming: one
        import at a time. Inside a trio run a system task starts the next one when this one is ready;
        elsewhere the next call does."""
        from .. import _driver

        if self._closed:
            return
        self._lend_ready()
        self._watch_shelf()
        if self._warming is not None:
            if self._warming.check_ready() is False:
                return
            self._warming = None
        if not self._short():
            return
        control, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        child_fd = child_end.detach()  # the interpreter owns (and closes) it from here on
        try:
            handle = _driver.spawn(
                _WARM_BOOTSTRAP.format(control_fd=child_fd, sys_path=_sys_path()), name='subint-warm'
            )
        except BaseException:
            control.close()
            os.close(child_fd)
            raise
        entry = self._warming = _Pooled(handle, control, child_fd)
        self._idle.append(entry)
        if trio.lowlevel.in_trio_run():
            trio.lowlevel.spawn_system_task(self._fill_when_ready, entry, name='subint warm-pool refill')

    def _refill_allowed(self) -> bool:
        return self._in_flight == 0 and _native().shelf_in_flight() == 0

    async def _fill_when_ready(self, entry: _Pooled) -> None:
        """Once `entry` is ready (lent) or has ended (replaced), start the next one, unless a warm spawn is in
        flight (its completion refills) or the pool closed."""
        try:
            ready = await entry.wait_ready()
            if not ready and entry in self._idle:  # else take() has it, or the pool closed
                self._idle.remove(entry)
                await self._discard(entry)
            self._lend_ready()
            if self._refill_allowed():
                self.fill()
        except (
            Exception
        ):  # a system task must not raise (it would end the whole run); the next fill() retries
            log.warning('the subint warm pool could not start its next interpreter', exc_info=True)

    def _watch_shelf(self) -> None:
        """In a trio run, keep one system task refilling after takes from the shelf (by any interpreter)."""
        if not trio.lowlevel.in_trio_run():
            return
        run = trio.lowlevel.current_root_task()
        if self._watching is not run:
            self._watching = run
            trio.lowlevel.spawn_system_task(self._refill_after_takes, name='subint warm-pool shelf watch')

    async def _refill_after_takes(self) -> None:
        taken_fd = _native().shelf_taken_fd()
        try:
            while not self._closed:
                await trio.lowlevel.wait_readable(taken_fd)
                try:
                    os.read(taken_fd, 8)
                except BlockingIOError:
                    continue
                if self._refill_allowed():
                    self.fill()
        except Exception:  # a system task must not raise; the next spawn's fill() retries
            log.warning('the subint warm pool stopped watching its shelf', exc_info=True)

    def status(self) -> WarmPoolStatus:
        states = [entry.check_ready() for entry in self._idle]
        lent = _native().shelf_count(lender=self._lender)
        return WarmPoolStatus(self.size, lent + states.count(True), states.count(False))

    async def take(self, patience: float) -> _Pooled | None:
        """A ready interpreter if there is one (lent or not), else the one warming the longest (waiting for it
        beats a cold start, which would import from scratch) for up to `patience` seconds; None when the pool
        is empty (which starts a refill) or that one is not ready in time."""
        self._lend_ready()
        lent = _take_from_shelf()
        if lent is not None:
            return lent
        while self._idle:
            entry = next((e for e in self._idle if e.check_ready()), self._idle[0])
            self._idle.remove(entry)
            if self._warming is entry:
                self._warming = None
            ready = None
            try:
                with trio.move_on_after(patience):
                    ready = await entry.wait_ready()
            finally:
                if ready is None:  # cancelled or out of patience: it stays in the pool
                    self._idle.appendleft(entry)
                    if entry.handle.outcome is None and self._warming is None:
                        self._warming = entry
            if ready is None:
                return None
            if ready:
                self._in_flight += 1
                entry.from_idle = True
                return entry
            await self._discard(entry)
        self.fill()
        return None

    def spawn_complete(self, entry: _Pooled) -> None:
        """A warm spawn handed its portal to the caller (or failed): refill once none is in flight."""
        if entry.from_idle:
            self._in_flight -= 1
        else:
            _native().shelf_done()
        if self._refill_allowed():
            self.fill()

    async def wait_ready(self) -> None:
        """Sleep until the pool is full and every interpreter in it is ready (replacing any that end instead)."""
        while True:
            self.fill()
            ended = [entry for entry in list(self._idle) if not await entry.wait_ready()]
            for entry in ended:
                if entry in self._idle:
                    self._idle.remove(entry)
                    await self._discard(entry)
            self._lend_ready()
            if not ended and (self._closed or not self._short()) and not self._idle:
                return

    def settle(self, timeout: float) -> bool:
        """Block (outside trio) until every idle interpreter is ready or `timeout` passes; True if settled."""
        deadline = time.monotonic() + timeout
        while True:
            warming = [e for e in self._idle if e.check_ready() is False]
            left = deadline - time.monotonic()
            if not warming:
                return True
            if left <= 0:
                return False
            # poll, not select: a large tree leaves the refill's control fd above select()'s limit of 1023.
            poller = select.poll()
            for entry in warming:
                poller.register(entry.control, select.POLLIN)
            poller.poll(left * 1000)

    def held_fds(self) -> set[int]:
        """Descriptors the pooled interpreters hold in this process (both control ends, the done and exit fds,
        and the epoll and wake-up sockets of each ready one's waiting trio loop)."""
        fds: set[int] = set()
        handles = []
        for entry in self._idle:
            fds.update((entry.control.fileno(), entry.child_control_fd, *entry.loop_fds))
            handles.append(entry.handle)
        for handle, control_fd, held in self._lent():
            fds.update((control_fd, *held))
            handles.append(handle)
        for handle in handles:
            try:
                fds.update((handle.done_fd, handle.exit_fd))
            except RuntimeError:  # closed meanwhile
                pass
        return fds

    def handles(self) -> list[Any]:
        return [entry.handle for entry in self._idle] + [item[0] for item in self._lent()]

    async def _discard(self, entry: _Pooled) -> None:
        """Drop an interpreter that closed its control socket before it was ready, and say why it failed."""
        entry.close_control()
        with trio.move_on_after(_DISCARD_JOIN_TIMEOUT):
            await trio.lowlevel.wait_readable(entry.handle.done_fd)  # its outcome is known from then on
        outcome = entry.handle.outcome
        log.warning(
            'a warm-pool interpreter (%s) ended before it was ready: %s',
            entry.handle.id,
            (outcome.traceback or outcome.exc_type) if outcome is not None else 'it has not ended yet',
        )
        entry.release(0.0)

    def close(self, timeout: float) -> None:
        """Release every pooled interpreter, lent ones included (EOF on its control socket ends it), and join
        them within `timeout`."""
        self._closed = True
        idle, self._idle = list(self._idle), collections.deque()
        idle += [_Pooled.from_shelf(item) for item in _native().shelf_take_all()]
        for entry in idle:
            entry.close_control()
        deadline = time.monotonic() + timeout
        for entry in idle:
            entry.release(max(0.0, deadline - time.monotonic()))


class _Borrower:
    """What an interpreter without a pool of its own spawns from: the shelf, without waiting or refilling (the
    pool that lent it refills)."""

    async def take(self, patience: float) -> _Pooled | None:
        return _take_from_shelf()

    def spawn_complete(self, entry: _Pooled) -> None:
        _native().shelf_done()


def _sys_path() -> list[str]:
    return [p for p in sys.path if p]


_pool: _WarmPool | None = None
_pool_configured = False  # set_warm_pool_size() was called: never fall back to the default pool


def set_warm_pool_size(size: int) -> None:
    """Keep `size` warm interpreters ready for subint spawns in this process (0 disables the pool). The pool
    starts filling at once; see `warm_pool_status()` and `wait_warm_pool_ready()`."""
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


def warm_pool_status() -> WarmPoolStatus:
    """How many warm interpreters are ready now and how many are still warming (all zero without a pool)."""
    return _pool.status() if _pool is not None else WarmPoolStatus(0, 0, 0)


async def wait_warm_pool_ready(timeout: float = 60.0) -> None:
    """Sleep until the warm pool is full and every interpreter in it is ready (a deferred refill is started).
    Raises trio.TooSlowError after `timeout` seconds; returns at once without a pool."""
    with trio.fail_after(timeout):
        if _pool is not None:
            await _pool.wait_ready()


_closer_registered = False


def _register_pool_closer() -> None:
    """Close the pool at exit, before the driver's own exit hook (atexit runs the later-registered first):
    idle pooled interpreters wait in os.read, which only EOF on their control socket ends."""
    global _closer_registered
    if not _closer_registered:
        import atexit

        from .. import _driver  # noqa: F401  (registers the driver's hook first)

        atexit.register(close_warm_pool)
        _closer_registered = True


def close_warm_pool(timeout: float = 5.0) -> None:
    """End every idle warm interpreter (joined within `timeout`) and drop the pool."""
    global _pool
    if _pool is not None:
        _pool.close(timeout)
        _pool = None


def current_pool() -> _WarmPool | _Borrower | None:
    """What spawns take warm interpreters from in this interpreter: the root interpreter's pool (created on
    first use), an interpreter's own pool if it called set_warm_pool_size, else the shelf the root's pool
    lends to (nested actors spawn warm while it has interpreters ready). None when pools are off."""
    from ._subint import current_interp_id

    if _pool is not None or _pool_configured or not DEFAULT_POOL_SIZE:
        return _pool
    if current_interp_id() in (0, None):
        set_warm_pool_size(DEFAULT_POOL_SIZE)
        return _pool
    return _BORROWER


_BORROWER = _Borrower()
