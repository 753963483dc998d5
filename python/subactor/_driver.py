"""The Python policy layer over the native subinterpreter driver (`subactor._native`).

The native module gives primitives: spawn a legacy subinterpreter on its own OS thread, join it with a
bound, interrupt it, abandon it, see it exit through a file descriptor, dump every interpreter's stacks.
This module re-exports them and adds the policy that belongs in Python:

- Two milestones per interpreter: *done* (its bootstrap returned, its threads are gone, its atexit callbacks
  ran: `outcome` is set, `done_fd` readable, state 'ending') and *finished* (the interpreter is finalized:
  `exit_fd` readable, gone from `live()`). Finalization costs tens of ms of shared-GIL time each, so the
  runtime treats an actor as over at done and lets its interpreter finish in the background
  (conc-anal/subint-finalization-off-the-teardown-path.md). `close()` is fine from done on.
- Process exit. An `atexit` hook (atexit runs before CPython finalizes leftover subinterpreters) interrupts
  every live interpreter and waits within `EXIT_JOIN_TIMEOUT` seconds for them to be done, then within
  `EXIT_FINALIZE_TIMEOUT` seconds for the done ones to finish ending (their own bound: N finalizations take
  turns on the GIL). If some are still stuck in C, or still ending, after that, finalizing the process would
  free thread states those threads are still using (measured: SIGSEGV/SIGBUS in 13 of 60 runs), so the hook
  reports them on stderr, runs the atexit callbacks still due (those registered before this module was
  imported: atexit runs the last registered first), flushes stdio and leaves with `os._exit(status)`, the status
  CPython would have exited with (learnt from the exception that ends the main thread: see
  `_watch_how_the_main_thread_ends`). See conc-anal/abandoned-thread-at-exit.md. Imported inside a subinterpreter, the hook only sweeps the
  interpreters that one spawned (it does not wait for those merely ending: they need nothing from it, and
  the main interpreter's hook bounds them), and never exits the process.
- trio integration: `await wait_done(handle)` / `await wait_exit(handle)` sleep on the handle's done / exit
  fd, so the parent needs no thread and no polling to learn that a child is over / gone.
"""

from __future__ import annotations

import atexit
import os
import sys

from ._config import seconds_from_env
from ._native import (
    Interpreter,
    Outcome,
    Timer,
    arm_watchdog,
    atexit_callbacks,
    current_interpreter_id,
    disarm_watchdog,
    dump_stacks,
    interpreter_labels,
    interrupt_after,
    live,
    live_count,
    serve_dumps,
    set_interpreter_label,
    set_trim_after_finalize,
    shutdown,
    spawn,
    stop_serving_dumps,
    trim_memory,
    wait_watchdog,
)

__all__ = [
    'EXIT_FINALIZE_TIMEOUT',
    'EXIT_JOIN_TIMEOUT',
    'Interpreter',
    'Outcome',
    'Timer',
    'arm_watchdog',
    'current_interpreter_id',
    'disarm_watchdog',
    'dump_stacks',
    'interpreter_labels',
    'interrupt_after',
    'live',
    'live_count',
    'serve_dumps',
    'set_exit_status',
    'set_interpreter_label',
    'shutdown',
    'spawn',
    'stop_serving_dumps',
    'trim_memory',
    'wait_done',
    'wait_exit',
    'wait_watchdog',
]

MAIN_INTERPRETER_ID = 0


#: How long the exit hook waits in all for interrupted interpreters to be done (env SUBACTOR_EXIT_JOIN_TIMEOUT).
EXIT_JOIN_TIMEOUT: float = seconds_from_env('SUBACTOR_EXIT_JOIN_TIMEOUT', 2.0)

#: How long the exit hook then waits in all for the done interpreters to finish ending, i.e. to be finalized
#: (env SUBACTOR_EXIT_FINALIZE_TIMEOUT). Generous: each takes tens of ms, one after the other on the shared
#: GIL, and a process that exits right after tearing down many actors has all of them still ending.
EXIT_FINALIZE_TIMEOUT: float = seconds_from_env('SUBACTOR_EXIT_FINALIZE_TIMEOUT', 30.0)


#: Whether the last of a run of interpreter finalizations hands the C heap's free memory back to the OS
#: (malloc_trim on its worker thread, off the GIL; env SUBACTOR_TRIM_AFTER_FINALIZE=0 turns it off). Each ended
#: interpreter frees most of what it allocated, but into glibc arenas that nothing trims by itself: measured, 20
#: subint actors ended left ~95 MiB resident that one trim gave back, in a few ms.
TRIM_AFTER_FINALIZE: bool = os.environ.get('SUBACTOR_TRIM_AFTER_FINALIZE', '1') not in ('0', '')
set_trim_after_finalize(TRIM_AFTER_FINALIZE)


async def wait_done(handle: Interpreter) -> Outcome:
    """Sleep until `handle`'s interpreter is done (it may still be ending) and return its outcome.

    Uses `trio.lowlevel.wait_readable(handle.done_fd)`: no thread, no polling. Cancelling this does not
    stop the interpreter. The handle may be closed once this returns; call `trio.lowlevel.notify_closing`
    on the fd first if another task may still be waiting on it.
    """
    import trio  # imported here: only trio users pay for it

    await trio.lowlevel.wait_readable(handle.done_fd)
    outcome = handle.outcome
    if outcome is None:
        raise RuntimeError(f'{handle!r} signalled it was done but has no outcome')
    return outcome


async def wait_exit(handle: Interpreter) -> Outcome:
    """Sleep until `handle`'s thread is done, reap it and return its outcome.

    Uses `trio.lowlevel.wait_readable(handle.exit_fd)`: no thread, no polling. Cancelling this does not
    stop the interpreter (use `handle.interrupt()`). Close the handle only after this returns.
    """
    import trio  # imported here: only trio users pay for it

    await trio.lowlevel.wait_readable(handle.exit_fd)
    if not handle.join(0):
        raise RuntimeError(f'{handle!r} signalled its exit but did not finish')
    outcome = handle.outcome
    assert outcome is not None
    return outcome


_exit_status_hint: int | None = None
# The status the exception that ended the main thread's outermost frame makes CPython exit with (None: no such
# exception seen); a negative value -N means "killed by signal N" (an uncaught KeyboardInterrupt).
_observed_status: int | None = None
# sys.monitoring tool ids with no conventional owner (0 debugger, 1 coverage, 2 profiler, 5 optimizer).
_FREE_TOOL_IDS = (4, 3)


def set_exit_status(code: int) -> None:
    """The status this process is about to exit with, for the exit hook when interpreters stuck in C make it
    leave with os._exit(). Rarely needed: the hook sees the SystemExit (or other exception) that ends the main
    thread itself; this is for code that ends the process some other way (the pytest plugin sets it from the
    session's result)."""
    global _exit_status_hint
    _exit_status_hint = int(code)


def _status_of(exc: BaseException) -> int:
    # As CPython's _Py_HandleSystemExitAndKeyboardInterrupt and Py_RunMain decide it.
    if isinstance(exc, SystemExit):
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return exc.code & 0xFF
        return 1  # sys.exit('message'): CPython printed it already
    if isinstance(exc, KeyboardInterrupt):
        import signal

        return -signal.SIGINT
    return 1


def _watch_how_the_main_thread_ends() -> None:
    """Learn the status the process exits with: CPython handles the SystemExit (or other exception) that ends
    the main thread's outermost frame and keeps the status in a C local, out of an atexit hook's sight. A global
    sys.monitoring PY_UNWIND callback sees every frame that an exception leaves; it records the exception
    leaving the main thread's outermost frame (`python script.py`, `-c`: the __main__ module; `-m`: runpy's
    frame; pytest: its console script). Only unwinding frames cost a call. Without a free tool id or a Python
    frame at the bottom of the main thread (embedding), the hint and sys.last_exc remain."""
    import threading

    main = threading.main_thread()
    if threading.current_thread() is main:
        frame = sys._getframe()
    else:
        current = sys._current_frames().get(main.ident)  # type: ignore[arg-type]
        if current is None:
            return
        frame = current
    while frame.f_back is not None:
        frame = frame.f_back
    bottom = frame.f_code
    monitoring = sys.monitoring
    for tool in _FREE_TOOL_IDS:
        try:
            monitoring.use_tool_id(tool, 'subactor exit status')
        except ValueError:
            continue
        break
    else:
        return

    def on_unwind(code: object, offset: int, exc: BaseException) -> None:
        global _observed_status
        if code is bottom:
            _observed_status = _status_of(exc)

    monitoring.register_callback(tool, monitoring.events.PY_UNWIND, on_unwind)
    monitoring.set_events(tool, monitoring.events.PY_UNWIND)


def _exit_status() -> int:
    # The exception that ended the main thread, else whoever said (set_exit_status), else an uncaught exception
    # printed in some other way (sys.last_exc), else a normal exit.
    if _observed_status is not None:
        return _observed_status
    if _exit_status_hint is not None:
        return _exit_status_hint
    last = getattr(sys, 'last_exc', None)
    return 0 if last is None else _status_of(last)


def _run_the_atexit_callbacks_still_due() -> None:
    """Run, in CPython's order, the atexit callbacks that come after this hook (those registered before
    `_driver` was imported): os._exit() would skip them. The ones registered after it already ran. They are
    put back alone into atexit's list and run by atexit itself (same order, same error reports), from inside
    this callback: CPython iterates over a copy of the list, and this hook never returns to it."""
    pending = atexit_callbacks()
    index = next((i for i, (func, _args, _kwargs) in enumerate(pending) if func is _at_exit), None)
    if index is None:
        return  # not run by atexit (called directly)
    due = pending[index + 1 :]
    if not due:
        return
    atexit._clear()
    for func, args, kwargs in reversed(due):  # the last registered runs first
        atexit.register(func, *args, **(kwargs or {}))
    atexit._run_exitfuncs()


def _leave(status: int) -> None:
    if status < 0:  # an uncaught KeyboardInterrupt: die of SIGINT, as CPython does
        import signal

        try:
            signal.signal(-status, signal.SIG_DFL)
            os.kill(os.getpid(), -status)  # delivered before kill() returns
        except (OSError, ValueError):
            pass
        status = 128 - status
    os._exit(status)


def _at_exit() -> None:
    me = current_interpreter_id()
    in_main = me == MAIN_INTERPRETER_ID
    scope = None if in_main else me
    mine = [entry for entry in live() if scope is None or entry.get('parent_id') == scope]
    # Interpreters already abandoned were given their interrupts and their bound by whoever gave up on them: when
    # only those remain (besides ones merely ending, which need no interrupt), interrupt them once more but do not
    # wait again (it only delays the exit).
    states = {entry['state'] for entry in mine}
    only_abandoned = 'abandoned' in states and states <= {'abandoned', 'ending'}
    waited = 0.0 if only_abandoned else EXIT_JOIN_TIMEOUT
    finalize = EXIT_FINALIZE_TIMEOUT if in_main else None
    stuck = shutdown(waited, spawned_by=scope, finalize_timeout=finalize)
    if not stuck or not in_main:
        return
    running = [s for s in stuck if s['state'] != 'ending']
    ending = [s for s in stuck if s['state'] == 'ending']
    parts = []
    if running:
        names = ', '.join(f'{s["id"]} {s["name"]!r}' for s in running)
        parts.append(
            f'{len(running)} interpreter(s) still running {waited} s after the exit interrupt ({names})'
        )
    if ending:
        names = ', '.join(f'{s["id"]} {s["name"]!r}' for s in ending)
        parts.append(f'{len(ending)} interpreter(s) still ending (finalizing) after {finalize} s ({names})')
    status = _exit_status()
    try:
        how = f'os._exit({status})' if status >= 0 else f'signal {-status}'
        sys.stderr.write(
            f'subactor: {"; ".join(parts)}; running the remaining atexit callbacks, then exiting with {how} '
            'instead of finalizing\n'
        )
        _run_the_atexit_callbacks_still_due()
        status = _exit_status()  # a callback may have said
        if 'logging' in sys.modules:
            sys.modules['logging'].shutdown()
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    finally:
        _leave(status)


atexit.register(_at_exit)
if current_interpreter_id() == MAIN_INTERPRETER_ID:
    _watch_how_the_main_thread_ends()
