# The `subint` backend: each child actor runs its own trio.run() in a legacy subinterpreter on a dedicated thread.
#
# Design (see ../shared notes on 3.14 subinterpreters and conc-anal/):
# - The native driver owns the thread: it creates the interpreter, runs the bootstrap below, ends the interpreter
#   on that same thread, and makes `done_fd` readable once the actor is done (before finalizing it). The parent
#   waits on that fd from trio: no polling, and no trio worker thread ever holds a subinterpreter thread state.
# - Parent and child talk over a socketpair made here; the child end's fd number is written into the bootstrap
#   (the interpreters share the process's fd table), so there is no listener, address or connect-back.
# - Hard kill, every step bounded by Bounds: a byte on a kill socket makes a child whose loop runs abort every
#   task (shielded ones too) and acknowledge; a child busy in Python code gets exceptions injected into its
#   threads (backing off over `interrupt_join_timeout`) until its loop runs and acknowledges; a thread still
#   running after that is stuck in C: it is abandoned (reported, never destroyed from here, never blocking exit).
#   Each step needs the shared GIL, which a child spinning in Python (and a pool interpreter importing) lets go
#   of only when asked, after the switch interval; a waiter can lose the hand-off to a third thread and wait
#   again. So the process's switch interval is `kill_switch_interval` while any hard kill runs
#   (_quick_gil_handoffs): a kill took 40-150 ms with a refill importing, ~30-40 ms with it.
# - Warm start: see _warm_pool.py. A warm spawn differs from a cold one only in who runs the bootstrap: an
#   interpreter that is already warm reads the same fds, name and uuid from its control socket.
from __future__ import annotations

import contextlib
import functools
import logging
import socket
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import trio

from .._ipc import Channel, channel_from_socket
from ._base import Child
from ._warm_pool import current_pool

if TYPE_CHECKING:
    from .._config import Bounds
    from ._warm_pool import _Pooled

log = logging.getLogger('subactor')

# The parent keeps its copy of the child's socket end until the handshake, so a child that dies before taking
# it leaks nothing: the child works on its own dup.
_COLD_BOOTSTRAP = """\
import gc as _gc, os as _os, sys as _sys
_sys.path[:0] = [_p for _p in {sys_path!r} if _p not in _sys.path]
_fd, _kill = _os.dup({fd}), _os.dup({kill_fd})
_gc.disable()  # see _child.main: no collections while importing the runtime, what it built frozen afterwards
try:
    from subactor import _entry, _native  # _native: channels keep the shared GIL across socket calls
    from subactor._spawn._subint import child_bootstrap
finally:
    _gc.freeze()
    _gc.enable()
child_bootstrap(_fd, {name!r}, {uuid!r}, _kill)
"""


# Hard kills running in this interpreter, the switch interval before the first, and the one it set.
_quick_handoffs: dict[str, Any] = {'active': 0, 'saved': None, 'ours': None}


@contextlib.contextmanager
def _quick_gil_handoffs(interval: float) -> Iterator[None]:
    """Lower the process's GIL switch interval for the block; the last block to end restores it, unless someone
    else changed it meanwhile (theirs stands). Interpreters share the GIL, so nested ones compose: each restores
    only the value it saw, and only while its own is still in force."""
    state = _quick_handoffs
    if state['active'] == 0:
        state['saved'] = sys.getswitchinterval()
        sys.setswitchinterval(min(interval, state['saved']))
        state['ours'] = sys.getswitchinterval()
    state['active'] += 1
    try:
        yield
    finally:
        state['active'] -= 1
        if state['active'] == 0 and sys.getswitchinterval() == state['ours']:
            sys.setswitchinterval(state['saved'])


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


class _PendingStart:
    """A warm interpreter taken from the pool but not yet told what to serve: its assignment (channel fd, name,
    uuid, kill fd) waits for `SubintChild.begin()`."""

    __slots__ = ('assignment', 'pooled')

    def __init__(self, pooled: _Pooled, assignment: tuple[int, str, str, int]) -> None:
        self.pooled = pooled
        self.assignment = assignment


class SubintChild(Child):
    """A child actor in a subinterpreter on its own driver thread."""

    def __init__(
        self,
        handle: Any,
        bounds: Bounds,
        child_sock: socket.socket,
        kill_socks: tuple[socket.socket, socket.socket],
        on_spawn_complete: Callable[[], None] | None = None,
        pending_start: _PendingStart | None = None,
        name: str = '?',
    ) -> None:
        self.handle = handle
        self.name = name  # the actor's (a warm interpreter's driver name is 'subint-warm')
        self._on_spawn_complete = on_spawn_complete
        self._pending_start = pending_start
        self._bounds = bounds
        self._child_sock = child_sock
        # The kill socketpair: we keep `_kill` and send kill bytes on it; the child works on a dup of
        # `_kill_child_end` (ours is closed after the handshake) and answers each byte with an acknowledgement.
        self._kill, self._kill_child_end = kill_socks
        # Set when a kill byte is answered with end-of-file: the child's loop is over, its exit sweep runs.
        self._loop_ended = False
        # Set when the interpreter is done (done_fd readable: the actor's code, threads and atexit callbacks are
        # over, the outcome is known) or abandoned. Its interpreter may still be ending then: finalization costs
        # tens of ms of shared-GIL time and is no part of the actor's life, so no teardown waits for it
        # (conc-anal/subint-finalization-off-the-teardown-path.md); the driver bounds it at process exit. One
        # system task watches the fd: trio allows a single waiter per fd, and a system task outlives any cancel
        # scope of the waiters.
        self._gone = trio.Event()
        self._watching = True
        self._released = False
        trio.lowlevel.spawn_system_task(self._watch_done, name=f'subint-exit-watch:{handle.name}')

    async def _watch_done(self) -> None:
        try:
            await trio.lowlevel.wait_readable(self.handle.done_fd)
            self._watching = False
            if self.abandoned:
                # An abandoned thread that got out of its C call after all: nobody else will release it.
                self._release()
        except trio.ClosedResourceError:
            pass  # cleanup() released the handle first (it had seen the outcome)
        finally:
            self._watching = False
            self._gone.set()

    def _release(self) -> None:
        """Close the handle once it is done: at once, or (still ending) the driver closes its fds when it finishes."""
        if self._released:
            return
        self._released = True
        if self._watching:
            # Wake the watcher with ClosedResourceError: the fd is ours to give up, and after close the driver may
            # close it from its own thread.
            trio.lowlevel.notify_closing(self.handle.done_fd)
        self.handle.close()

    @property
    def interp_id(self) -> int | None:  # type: ignore[override]
        interp_id: int | None = self.handle.id
        return interp_id

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

        A byte answered with end-of-file means the child's loop has ended: it is in its exit sweep (waiting for
        its own children, threads and atexit callbacks, each bounded by its own copy of these bounds). Nothing is
        injected into it then (an exception there would cut its sweep short and orphan what it waits for); it
        gets a fresh T, counted from the end-of-file, to be done, and is abandoned only after that.
        """
        with trio.CancelScope(shield=True), _quick_gil_handoffs(self._bounds.kill_switch_interval):
            if self._forgo_start():
                # An idle pooled interpreter ends on that EOF within milliseconds; escalate only if it does not.
                with trio.move_on_after(self._bounds.interrupt_join_timeout):
                    await self._gone.wait()
            if self.exited():
                return
            deadline = trio.current_time() + self._bounds.interrupt_join_timeout
            attempts = max(1, int(self._bounds.interrupt_attempts))
            unit = self._bounds.interrupt_join_timeout / (2**attempts - 1)
            log.info('killing actor %r (interpreter %s): kill byte', self.name, self.handle.id)
            self._send_kill_byte()
            acked = await self._ack_within(self._bounds.kill_ack_grace)
            step = 0
            while not self._gone.is_set() and trio.current_time() < deadline:
                if self._loop_ended:
                    log.info(
                        'actor %r (interpreter %s): its loop has ended; waiting up to %.2f s for its exit sweep',
                        self.name,
                        self.handle.id,
                        self._bounds.interrupt_join_timeout,
                    )
                    deadline = trio.current_time() + self._bounds.interrupt_join_timeout
                    break
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
                log.warning(
                    'actor %r (interpreter %s) is busy in Python code: injecting KeyboardInterrupt (step %d)',
                    self.name,
                    self.handle.id,
                    step,
                )
                if not self.handle.interrupt('KeyboardInterrupt'):
                    break  # done (ending or finished) meanwhile
                self._send_kill_byte()
                acked = await self._ack_within(wait)
            with trio.move_on_at(deadline):
                await self._gone.wait()
            if self.handle.outcome is not None:
                return
            log.warning(
                'subint child %r (interpreter %s) did not end within %.2f s of its hard kill (%s): its thread is '
                'stuck in C; abandoning it',
                self.name,
                self.handle.id,
                self._bounds.interrupt_join_timeout,
                'its loop ended'
                if self._loop_ended
                else 'its loop acknowledged the kill'
                if acked
                else 'its loop never ran',
            )
            self.handle.abandon()
            self.abandoned = True
            self._gone.set()

    async def _ack_within(self, seconds: float) -> bool:
        """True if the child acknowledged a kill byte within `seconds`; False if it ended or stayed silent.
        End-of-file on the kill socket (the child's loop closed its end) sets `_loop_ended`."""
        acked = False
        with trio.move_on_after(seconds):
            async with trio.open_nursery() as n:

                async def wait_ack() -> None:
                    nonlocal acked
                    await trio.lowlevel.wait_readable(self._kill)
                    try:
                        answer = self._kill.recv(64)
                    except OSError:
                        pass
                    else:
                        acked = bool(answer)
                        self._loop_ended = not answer
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
        self._forgo_start()
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

    def begin(self) -> None:
        pending, self._pending_start = self._pending_start, None
        if pending is not None:
            try:
                pending.pooled.assign(*pending.assignment)
            except OSError as exc:
                # It ended meanwhile: its done_fd says so, and the exit watcher ends the handshake.
                log.debug('warm interpreter %s could not take its assignment: %r', self.handle.id, exc)

    def _forgo_start(self) -> bool:
        """Never assigned: closing its control socket (EOF) ends the pooled interpreter by itself. True if so."""
        pending, self._pending_start = self._pending_start, None
        if pending is None:
            return False
        pending.pooled.close_control()
        return True

    def after_handshake(self) -> None:
        self._child_sock.close()
        self._kill_child_end.close()

    def spawn_complete(self) -> None:
        """Tell the warm pool (once) that this spawn no longer needs the GIL to itself: it may refill."""
        done, self._on_spawn_complete = self._on_spawn_complete, None
        if done is not None:
            done()

    def cleanup(self) -> None:
        self._forgo_start()
        self.spawn_complete()  # a spawn that failed counts as complete too
        self._child_sock.close()
        self._kill_child_end.close()
        self._kill.close()
        if self.handle.outcome is not None:  # done: release it even if its interpreter is still ending
            self._release()


def _sys_path() -> list[str]:
    return [p for p in sys.path if p]


async def spawn_subint(uid: tuple[str, str], bounds: Bounds) -> tuple[Child, Channel]:
    name, uuid = uid
    pool = current_pool()
    # Waiting for a still-warming interpreter beats a cold start, within the handshake's own bound.
    pooled = await pool.take(patience=bounds.handshake_timeout) if pool is not None else None
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    child_fd = child_sock.fileno()
    kill, kill_child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    kill.setblocking(False)  # a kill byte never blocks the parent
    kill_r = kill_child_end.fileno()
    if pooled is not None:
        # Assigned in begin(), once the parent's opening messages are in the socket: the interpreter wakes once.
        handle = pooled.handle
        pending = _PendingStart(pooled, (child_fd, name, uuid, kill_r))
        on_spawn_complete = functools.partial(pool.spawn_complete, pooled)  # type: ignore[union-attr]
    else:
        code = _COLD_BOOTSTRAP.format(fd=child_fd, name=name, uuid=uuid, kill_fd=kill_r, sys_path=_sys_path())
        try:
            handle = _native().spawn(code, name=name)
        except BaseException:
            for sock in (parent_sock, child_sock, kill, kill_child_end):
                sock.close()
            raise
        pending, on_spawn_complete = None, None
    child = SubintChild(handle, bounds, child_sock, (kill, kill_child_end), on_spawn_complete, pending, name)
    return child, channel_from_socket(parent_sock, label='child')
