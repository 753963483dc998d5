"""The Python policy layer over the native subinterpreter driver (`subactor._native`).

The native module gives primitives: spawn a legacy subinterpreter on its own OS thread, join it with a
bound, interrupt it, abandon it, see it exit through a file descriptor, dump every interpreter's stacks.
This module re-exports them and adds the policy that belongs in Python:

- Process exit. An `atexit` hook (atexit runs before CPython finalizes leftover subinterpreters) interrupts
  every live interpreter and joins them within `EXIT_JOIN_TIMEOUT` seconds. If some are still stuck in C
  after that, finalizing would free thread states those threads are still using (measured: SIGSEGV/SIGBUS
  in 13 of 60 runs), so the hook reports them on stderr, flushes stdio and leaves with `os._exit()`. See
  conc-anal/abandoned-thread-at-exit.md. Imported inside a subinterpreter, the hook only sweeps the
  interpreters that one spawned, and never exits the process.
- trio integration: `await wait_exit(handle)` sleeps on the handle's exit fd, so the parent needs no thread
  and no polling to learn that a child is gone.
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
    'set_interpreter_label',
    'shutdown',
    'spawn',
    'stop_serving_dumps',
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


#: How long the exit hook waits in all for interrupted interpreters to end (env SUBACTOR_EXIT_JOIN_TIMEOUT).
EXIT_JOIN_TIMEOUT: float = _seconds_from_env('SUBACTOR_EXIT_JOIN_TIMEOUT', 2.0)


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


def _exit_status() -> int:
    # The status the program was going to exit with is not visible from an atexit hook; an uncaught
    # exception leaves sys.last_exc behind, which is the common failing case.
    return 1 if getattr(sys, 'last_exc', None) is not None else 0


def _at_exit() -> None:
    me = current_interpreter_id()
    in_main = me == MAIN_INTERPRETER_ID
    scope = None if in_main else me
    mine = [entry for entry in live() if scope is None or entry.get('parent_id') == scope]
    # Interpreters already abandoned were given their interrupts and their bound by whoever gave up on them: when
    # only those remain, interrupt them once more but do not wait again (it only delays the exit).
    only_abandoned = bool(mine) and all(entry['state'] == 'abandoned' for entry in mine)
    waited = 0.0 if only_abandoned else EXIT_JOIN_TIMEOUT
    stuck = shutdown(waited, spawned_by=scope)
    if not stuck or not in_main:
        return
    names = ', '.join(f'{s["id"]} {s["name"]!r}' for s in stuck)
    status = _exit_status()
    try:
        sys.stderr.write(
            f'subactor: {len(stuck)} interpreter(s) still running {waited} s after the exit interrupt '
            f'({names}); exiting with os._exit({status}) instead of finalizing\n'
        )
        if 'logging' in sys.modules:
            sys.modules['logging'].shutdown()
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    finally:
        os._exit(status)


atexit.register(_at_exit)
