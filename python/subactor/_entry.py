# A child actor's life from the inside, shared by every backend: handshake, boot, serve until cancelled, exit.
from __future__ import annotations

import functools
import logging
import os
import sys
import threading
import traceback
from collections.abc import Awaitable, Callable, Iterator

import trio

from . import _mainmod, _state
from ._actor import Actor
from ._config import Bounds
from ._errors import TransportClosed, pack_error
from ._ipc import Channel, as_addr, channel_from_fd
from ._log import setup_logging
from ._msg import Error, Hello, Ready, SpawnSpec

log = logging.getLogger('subactor')


async def child_main(chan: Channel, uid: tuple[str, str], method: str, interp_id: int | None = None) -> None:
    """The child's side of the handshake: read the parent's hello and spec, boot, then answer with our hello and
    Ready (or the boot error) in one write, so the parent sleeps until the answer is whole."""
    our_hello = Hello(list(uid), os.getpid(), interp_id, None)
    hello = await chan.recv()
    spec = await chan.recv()
    if not isinstance(hello, Hello) or not isinstance(spec, SpawnSpec):
        raise TransportClosed(f'bad handshake from parent: {hello!r}, {spec!r}')
    if not spec.secret:
        raise TransportClosed(f"the parent's spawn spec carries no actor tree secret: {spec!r}")
    Actor.accept_hello(chan, hello)
    for path in reversed(spec.sys_path):
        if path not in sys.path:
            sys.path.insert(0, path)
    _mainmod.set_from_spec(spec.main_module, spec.load_main)
    setup_logging(spec.loglevel, uid[0], spec.log_config)
    actor = Actor(
        uid[0],
        uid=uid,
        spawn_method=spec.spawn_method,
        parent_uid=(spec.parent_uid[0], spec.parent_uid[1]),
        enable_modules=spec.enable_modules,
        registry_addr=as_addr(spec.registry_addr) if spec.registry_addr else None,
        transport=spec.transport,
        bounds=Bounds(**spec.bounds),
        interp_id=interp_id,
        loglevel=spec.loglevel,
        log_config=spec.log_config,
        secret=spec.secret,
    )
    try:
        for module in spec.enable_modules:
            _mainmod.import_module(module)  # '__main__': the root's script, loaded here (see _mainmod)
    except BaseException as exc:
        with trio.move_on_after(actor.bounds.task_cancel_timeout):
            await chan.send_many(our_hello, Error(None, pack_error(exc, local_uid=uid)))
        raise
    actor.on_parent_lost = functools.partial(_reap_if_orphaned, actor, trio.lowlevel.current_task())
    if interp_id is None:
        _exit_when_parent_process_ends(actor, hello.pid)
        _serve_dumps_to_parent(actor)
    _state.set_current(actor)
    try:
        async with trio.open_nursery() as nursery:
            # Serving first, Ready last: sending is then the last thing this loop does before it sleeps, so the
            # parent, woken by it, finds the shared GIL free instead of waiting out our start-up.
            await nursery.start(functools.partial(actor.serve, parent_chan=chan))
            await chan.send_many(
                our_hello, Ready(list(actor.listen_addr) if actor.listen_addr else None), then_park=True
            )
    finally:
        _state.set_current(None)
        await chan.aclose()


class HardKilled(BaseException):
    """The parent sent a byte on this child's kill socket: every task ends now, shielded or not."""


def _raise_hard_killed() -> None:
    raise HardKilled('hard-killed by the parent')


def _abort_every_task(main_task: trio.lowlevel.Task) -> None:
    """Throw HardKilled into every task of `main_task`'s tree that is blocked at a checkpoint, shielded or not.

    trio has no public "abort everything" (cancellation respects shields, and an error in a system task only
    cancels), so this uses the abort hook trio itself uses to deliver cancellation: a task parked in any trio
    wait has an abort function that reschedules it with the given exception. Tasks that are runnable right now
    are reached by the next kill byte (the parent writes one per attempt). See
    conc-anal/hard-kill-of-a-shielded-subint-child.md.
    """
    pending = [main_task]
    while pending:
        task = pending.pop()
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)
        if getattr(task, '_abort_func', None) is not None:
            task._attempt_abort(_raise_hard_killed)


def _kill_children_of_current_actor() -> None:
    actor = _state.maybe_current_actor()
    if actor is not None:
        actor.kill_children_now()


async def _watch_kill_socket(kill_fd: int, main_task: trio.lowlevel.Task) -> None:
    """System task: each byte on the kill socket `kill_fd` is acknowledged (a byte back: "my loop runs, do not
    inject exceptions into it") and aborts every task of the actor (see `_abort_every_task`).

    It keeps watching until trio.run ends (trio cancels system tasks once the main task is done), because a task
    may catch HardKilled, or be runnable when a byte arrives. An exception the parent injected into a busy loop
    may land here; it must not end the watch, or a child idle in epoll could never be reached again.
    """
    try:
        while True:
            try:
                await trio.lowlevel.wait_readable(kill_fd)
                if not os.read(kill_fd, 64):
                    return  # the parent closed its end: it will not ask again
                try:
                    os.write(kill_fd, b'a')
                except OSError:
                    pass  # the parent is gone or not reading: it falls back to injecting
                _kill_children_of_current_actor()
                if not hasattr(main_task, '_attempt_abort'):
                    raise HardKilled('hard-killed by the parent (this trio cannot abort shielded tasks)')
                _abort_every_task(main_task)
            except KeyboardInterrupt:
                continue
    finally:
        os.close(kill_fd)


# Exit status of a process child that had to end itself after losing its parent.
ORPHAN_EXIT_STATUS = 137


async def _reap_if_orphaned(actor: Actor, main_task: trio.lowlevel.Task) -> None:
    """System task started when the parent channel is lost: the actor cancels itself; if it is still running
    after `orphan_timeout` (a task ignores cancellation), every task is aborted with HardKilled; a process
    child still alive after the same bound again (spinning, or stuck in C) exits on a timer thread. trio
    cancels this task as soon as the actor is done. A subint child cannot end its own thread; its parent's
    interpreter exit interrupts it. See conc-anal/orphaned-grandchild-after-parent-kill.md."""
    bound = actor.bounds.orphan_timeout
    await trio.sleep(bound)
    log.warning('%r lost its parent %.1f s ago and is still running; aborting every task', actor, bound)
    actor.kill_children_now()
    _abort_every_task(main_task)
    if actor.interp_id is None:
        timer = threading.Timer(bound, _exit_orphan, args=(actor.name, bound))
        timer.daemon = True
        timer.start()


def _exit_when_parent_process_ends(actor: Actor, parent_pid: int) -> None:
    """The orphan watchdog of a process child that needs no trio loop (issue 13 item 5): a native thread
    exits this process with ORPHAN_EXIT_STATUS `2 * orphan_timeout` after the parent's process ends (the
    trio-side reaper above, when the loop runs, aborts every task at `orphan_timeout` and exits at the same
    `2 * orphan_timeout`; this one also ends a child spinning in Python or stuck in C, whose loop never gets
    to notice). It watches the parent's process through a pidfd, the pid from the parent's hello: not
    PR_SET_PDEATHSIG, which fires when the parent *thread* that forked us ends (trio runs each spawn on a
    cached worker thread that exits when idle) and knows only the OS parent (an mp_forkserver child's is the
    fork server). A parent in a subinterpreter is watched through its process: an interpreter that ends while
    its process lives closes the channel, which only the trio-side reaper sees. Armed for the process's
    life: the process exits soon after the actor ends anyway. See
    conc-anal/orphaned-grandchild-after-parent-kill.md."""
    grace = 2 * actor.bounds.orphan_timeout
    try:
        pidfd = os.pidfd_open(parent_pid)
    except OSError as exc:  # ESRCH: the parent is gone already, its channel too: the trio-side reaper acts
        log.warning('%r cannot watch its parent process %d: %s', actor, parent_pid, exc)
        return
    try:
        from ._native import exit_when_process_ends

        exit_when_process_ends(
            pidfd,
            grace,
            message=f'subactor: orphaned actor {actor.name!r}: its parent process {parent_pid} ended {grace} s '
            'ago and it is still running; exiting\n',
            status=ORPHAN_EXIT_STATUS,
        )
    finally:
        os.close(pidfd)


def _serve_dumps_to_parent(actor: Actor) -> None:
    """A process child answers hang-dump requests on its own socket from the driver's io thread (issue 15): its
    parent's dump nests this child's section even while this loop is idle, busy or stuck in C, and
    `python -m subactor.devx dump PID` reaches it too. A child where the extension does not load leaves a line in
    its parent's dump instead."""
    try:
        from ._hangdump import serve_dumps

        serve_dumps()
    except (ImportError, RuntimeError, OSError) as exc:
        log.warning('%r cannot serve hang dumps: %s', actor, exc)


def _exit_orphan(name: str, bound: float) -> None:
    sys.stderr.write(
        f'subactor: orphaned actor {name!r} did not end {bound} s after aborting its tasks; exiting\n'
    )
    sys.stderr.flush()
    os._exit(ORPHAN_EXIT_STATUS)


def run_child_from_fd(
    fd: int, uid: tuple[str, str], method: str, interp_id: int | None = None, kill_fd: int | None = None
) -> int:
    """Run a child actor on the inherited socket `fd` until it is cancelled; its exit status."""
    return run_child(serve_child, fd, uid, method, interp_id, kill_fd, interp_id=interp_id)


async def serve_child(
    fd: int, uid: tuple[str, str], method: str, interp_id: int | None = None, kill_fd: int | None = None
) -> None:
    """Serve as child actor `uid` over the inherited socket `fd` (in the task trio.run started); a byte on
    `kill_fd`, when given, aborts every task at once."""
    global _actor_name
    _actor_name = uid[0]
    if kill_fd is not None:
        trio.lowlevel.spawn_system_task(_watch_kill_socket, kill_fd, trio.lowlevel.current_task())
    await child_main(channel_from_fd(fd, label='parent'), uid, method, interp_id)


def run_child(async_fn: Callable[..., Awaitable[None]], *args: object, interp_id: int | None) -> int:
    """trio.run(async_fn, *args) as a child actor's whole life: its exit status (an injected interrupt is
    130, sys.exit(n) in any task is n); in a subinterpreter, its other threads are retired afterwards."""
    try:
        trio.run(async_fn, *args)
    except BaseException as exc:
        if _is_interrupt(exc):
            return 130  # hard-killed by an injected KeyboardInterrupt (or Ctrl-C in a process child)
        leaving = _find_system_exit(exc)
        if leaving is None:
            raise
        # sys.exit() in any task ends the actor with that status, on every backend (a process child exits with
        # it; a subint child's interpreter ends with it). Its traceback is the failure detail the parent shows.
        code = _exit_status_of(leaving)
        sys.stderr.write(
            f'actor {_actor_name!r} is exiting with status {code}: SystemExit raised in a task\n'
        )
        traceback.print_exception(leaving, file=sys.stderr)
        sys.stderr.flush()
        global last_exit_cause
        last_exit_cause = leaving
        return code
    finally:
        if interp_id is not None:
            retire_threads(Bounds.from_env().interrupt_join_timeout)
    return 0


# The name of the actor this interpreter serves as (set once it knows: a pooled interpreter learns it late).
_actor_name: str | None = None

# The SystemExit that ended the last actor run in this interpreter (a subint child chains it to its own exit).
last_exit_cause: SystemExit | None = None


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    """The exceptions `exc` is made of: through exception groups, and through a TrioInternalError to its cause
    (what a system task or trio's core raised)."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    elif isinstance(exc, trio.TrioInternalError) and exc.__cause__ is not None:
        yield from _leaves(exc.__cause__)
    else:
        yield exc


def _find_system_exit(exc: BaseException) -> SystemExit | None:
    return next((leaf for leaf in _leaves(exc) if isinstance(leaf, SystemExit)), None)


def _exit_status_of(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    return 1  # sys.exit('message'), as Python itself exits


def _is_interrupt(exc: BaseException) -> bool:
    return all(isinstance(leaf, (KeyboardInterrupt, trio.Cancelled, HardKilled)) for leaf in _leaves(exc))


def retire_threads(timeout: float) -> list[str]:
    """End every other thread of this interpreter before it is ended; the names of those still alive after
    `timeout` seconds.

    A subinterpreter must not be ended while another thread still runs in it (conc-anal/subint-destroy-race.md):
    trio keeps idle worker threads cached for 10 s, so first tell them to exit now, then join everything.
    """
    import threading
    import time

    try:
        from trio._core import _thread_cache as cache

        cache.IDLE_TIMEOUT = 0  # read by each idle worker when it next waits
        idle = cache.THREAD_CACHE._idle_workers
        for worker in list(idle):
            idle.pop(worker, None)
            worker._job = (lambda: None, lambda _result: None, None)
            worker._worker_lock.release()
    except (
        ImportError,
        AttributeError,
        RuntimeError,
    ):  # a trio without this cache: the joins below still bound it
        pass
    deadline = time.monotonic() + timeout
    me = threading.current_thread()
    stuck = []
    for thread in threading.enumerate():
        # In a subinterpreter on a foreign thread, `me` is a dummy and main_thread() is a placeholder for a
        # thread this interpreter never had: neither can (or need) be joined.
        if thread is me or isinstance(thread, (threading._DummyThread, threading._MainThread)):  # type: ignore[attr-defined]
            continue
        try:
            thread.join(max(0.0, deadline - time.monotonic()))
        except RuntimeError:
            continue
        if thread.is_alive():
            stuck.append(thread.name)
    if stuck:
        log.warning('actor %r: threads still running at interpreter end: %s', _actor_name, stuck)
    return stuck
