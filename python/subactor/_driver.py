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
  reports them on stderr, flushes stdio and leaves with `os._exit()`. See
  conc-anal/abandoned-thread-at-exit.md. Imported inside a subinterpreter, the hook only sweeps the
  interpreters that one spawned (it does not wait for those merely ending: they need nothing from it, and
  the main interpreter's hook bounds them), and never exits the process.
- trio integration: `await wait_done(handle)` / `await wait_exit(handle)` sleep on the handle's done / exit
  fd, so the parent needs no thread and no polling to learn that a child is over / gone.
"""

from __future__ import annotations

import atexit
import os
import sys

from ._native import (
    Interpreter,
    Outcome,
    Timer,
    arm_watchdog,
    current_interpreter_id,
    disarm_watchdog,
    dump_stacks,
    interpreter_labels,
    interrupt_after,
    live,
    live_count,
    serve_dumps,
    set_interpreter_label,
    shutdown,
    spawn,
    stop_serving_dumps,
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
    'wait_done',
    'wait_exit',
]

MAIN_INTERPRETER_ID = 0


def _seconds_from_env(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == '':
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (0 <= value < float('inf')):
        raise ValueError(f'{name} must be a number of seconds >= 0, not {raw!r}')
    return value


#: How long the exit hook waits in all for interrupted interpreters to be done (env SUBACTOR_EXIT_JOIN_TIMEOUT).
EXIT_JOIN_TIMEOUT: float = _seconds_from_env('SUBACTOR_EXIT_JOIN_TIMEOUT', 2.0)

#: How long the exit hook then waits in all for the done interpreters to finish ending, i.e. to be finalized
#: (env SUBACTOR_EXIT_FINALIZE_TIMEOUT). Generous: each takes tens of ms, one after the other on the shared
#: GIL, and a process that exits right after tearing down many actors has all of them still ending.
EXIT_FINALIZE_TIMEOUT: float = _seconds_from_env('SUBACTOR_EXIT_FINALIZE_TIMEOUT', 30.0)


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


def set_exit_status(code: int) -> None:
    """The status this process is about to exit with. The exit hook needs it when interpreters stuck in C make
    it leave with os._exit(), because an atexit hook cannot see the status the program was exiting with
    (the pytest plugin sets it from the session's result, so a failing run never exits 0)."""
    global _exit_status_hint
    _exit_status_hint = int(code)


def _exit_status() -> int:
    # Without a hint: an uncaught exception leaves sys.last_exc behind, which is the common failing case.
    if _exit_status_hint is not None:
        return _exit_status_hint
    return 1 if getattr(sys, 'last_exc', None) is not None else 0


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
        sys.stderr.write(
            f'subactor: {"; ".join(parts)}; exiting with os._exit({status}) instead of finalizing\n'
        )
        if 'logging' in sys.modules:
            sys.modules['logging'].shutdown()
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    finally:
        os._exit(status)


atexit.register(_at_exit)
