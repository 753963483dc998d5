"""Developer tools for hangs and leaks: dump where every task of every actor waits when a block overruns, and
report the threads, interpreters and file descriptors a block leaves behind. The dumps live in _hangdump.py
(layout, collection across processes), _tasktree.py (one actor's trio task tree) and src/ (the native watchdog,
thread stacks, dump server); this module is their public face and holds the leak tracking.

Typical usage::

    from subactor.devx import dump_on_hang, track_resource_deltas

    with dump_on_hang(10, path='hang.txt'):   # still running after 10 s: every task and stack to hang.txt
        trio.run(main)

    with track_resource_deltas('spawn test') as delta:
        trio.run(main)
    assert not delta.leaked, delta.describe()

    serve_dumps()   # then, from a shell: python -m subactor.devx dump <pid>

Design:

- Why native. `faulthandler` and `sys._current_frames()` see only the current interpreter, and anything that
  runs as a trio task, a Python thread or a signal handler needs the main interpreter's eval loop or the GIL
  at the wrong moment: a wedged program is exactly when it does not get them (SIGALRM and SIGINT handlers
  run only on the main thread of the main interpreter, and subinterpreter threads spinning under the shared
  GIL starve it: conc-anal/sigint-starvation-shared-gil.md). `dump_on_hang` therefore arms the driver's
  watchdog: the driver's own Asio thread writes the driver's view (no GIL needed, flushed first), then takes
  the GIL (a thread busy in Python hands it over within the switch interval) and walks every interpreter's
  thread states and frame chains read-only, and each actor's trio task tree through a dumper the actor
  registers in its interpreter (which needs no running loop: parked tasks have no thread stack, so an idle
  loop's hang is only visible there). A thread holding the GIL inside C forever gets the first part only. The
  dump always goes to a file (and its JSON form beside it): pytest captures or swallows stderr.
- Process children. Each serves dumps on its own socket from its own io thread, started at boot; the parent's
  dump asks them and nests their sections (a dead or wedged child leaves a line saying so).
- Actor names. Each interpreter is listed with its driver name (fixed at spawn: warm-pool interpreters are
  all 'subint-warm') and a label the runtime sets when an actor starts in it ("actor 'worker'").
- Leaks. `track_resource_deltas` compares snapshots of this interpreter's Python threads, the driver's live
  interpreters and the open fds. Resources that live on purpose for the life of the process are not leaks:
  idle workers in trio's thread cache (reused, they end after 10 idle seconds), the subint warm pool's idle
  interpreters and their control sockets, multiprocessing's resource tracker and fork server pipes, and the
  driver's io thread (started before the first snapshot). Threads and interpreters ending late (a child
  actor's thread that is between "exited" and "gone"; a subint actor's interpreter, which is still 'ending',
  i.e. being finalized, for tens of ms after its actor is done, and holds its done and exit fds until it
  finishes) get `settle` seconds to go before they count, and so does a warm pool still refilling (an
  interpreter warming up has files and sockets open for a while).
- Dumps from outside: `python -m subactor.devx dump PID` reads a dump from a process that called
  `serve_dumps()` (opt-in). Asking a process for a dump needs code in it that runs on demand: a Python
  signal handler is starved exactly like SIGINT, and a signalfd needs the signal blocked in every thread, which
  a library cannot arrange for threads it did not start (an unblocked SIGUSR1 kills the process). So the
  driver's io thread listens on a UNIX socket (mode 0600, in a 0700 directory of this user) and answers each
  connection with a dump, taking the GIL as the watchdog does. Not on by default for a program's own (root)
  process: a standing socket per process is a side effect a library should not impose; the process children an
  actor tree spawns serve, since their parent's dumps need them. PEP 768's `sys.remote_exec` is no substitute:
  its script runs only when the target's main thread next runs bytecode, which an idle trio loop parked in
  epoll or a thread blocked in C never does (the very hangs a dump is for), it needs ptrace rights over the
  target, and it reaches the main interpreter only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from . import _hangdump
from ._config import seconds_from_env
from ._hangdump import (
    DUMP_CLIENT_TIMEOUT,
    DUMP_COMPLETE_TIMEOUT,
    DUMP_END,
    HangDump,
    arm_hang_dump,
    dump_on_hang,
    dump_socket_path,
    json_path_for,
    read_dump,
    read_dump_record,
    serve_dumps,
    stop_serving_dumps,
)

__all__ = [
    'DUMP_CLIENT_TIMEOUT',
    'DUMP_COMPLETE_TIMEOUT',
    'DUMP_END',
    'LEAK_SETTLE_TIMEOUT',
    'HangDump',
    'ResourceDelta',
    'ResourceSnapshot',
    'arm_hang_dump',
    'dump_on_hang',
    'dump_socket_path',
    'json_path_for',
    'main',
    'read_dump',
    'read_dump_record',
    'resource_delta_fixture',
    'serve_dumps',
    'snapshot_resources',
    'stop_serving_dumps',
    'track_resource_deltas',
]


#: How long `track_resource_deltas` gives threads and interpreters that are ending to be gone before they
#: count as leaked (env SUBACTOR_LEAK_SETTLE_TIMEOUT). Only a block that leaks waits this long.
LEAK_SETTLE_TIMEOUT: float = seconds_from_env('SUBACTOR_LEAK_SETTLE_TIMEOUT', 5.0)

# --- resource deltas ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ResourceSnapshot:
    """The resources a leak shows up in, at one moment. Long-lived-by-design ones are left out (see the module
    docstring)."""

    threads: dict[int, str]  # Python threads of this interpreter: ident -> 'name'
    interpreters: dict[
        str, str
    ]  # the driver's live interpreters not owned by the warm pool: key -> description
    fds: dict[int, str]  # open file descriptors -> what they point at


@dataclasses.dataclass
class ResourceDelta:
    """What a `track_resource_deltas` block added and removed (filled in when the block exits)."""

    label: str
    before: ResourceSnapshot | None = None
    after: ResourceSnapshot | None = None
    threads_added: dict[int, str] = dataclasses.field(default_factory=dict)
    threads_removed: dict[int, str] = dataclasses.field(default_factory=dict)
    interpreters_added: dict[str, str] = dataclasses.field(default_factory=dict)
    interpreters_removed: dict[str, str] = dataclasses.field(default_factory=dict)
    fds_added: dict[int, str] = dataclasses.field(default_factory=dict)
    fds_removed: dict[int, str] = dataclasses.field(default_factory=dict)

    @property
    def leaked(self) -> bool:
        """True if the block left a thread, an interpreter or a file descriptor behind."""
        return bool(self.threads_added or self.interpreters_added or self.fds_added)

    @property
    def changed(self) -> bool:
        return self.leaked or bool(self.threads_removed or self.interpreters_removed or self.fds_removed)

    def describe(self) -> str:
        """One line per kind that changed: '+' what the block left behind, '-' what it released."""
        lines = []
        for kind, added, removed in (
            ('threads', self.threads_added, self.threads_removed),
            ('interpreters', self.interpreters_added, self.interpreters_removed),
            ('fds', self.fds_added, self.fds_removed),
        ):
            parts = [f'+{key} {value}' for key, value in added.items()]
            parts += [f'-{key} {value}' for key, value in removed.items()]
            if parts:
                lines.append(f'  {kind}: {", ".join(parts)}')
        head = f'{self.label}: ' + ('leaked' if self.leaked else 'released' if self.changed else 'no change')
        return '\n'.join([head, *lines])


def _idle_trio_threads() -> set[int]:
    """Idents of trio's cached worker threads that wait for their next job (they are reused, not leaked)."""
    cache_mod = sys.modules.get('trio._core._thread_cache')
    cache = getattr(cache_mod, 'THREAD_CACHE', None)
    idents = set()
    for worker in list(getattr(cache, '_idle_workers', {})):
        thread = getattr(worker, '_thread', None)
        if thread is not None and thread.ident is not None:
            idents.add(thread.ident)
    return idents


def _warm_pool() -> tuple[list[Any], set[int]]:
    """The subint warm pool's idle handles, and the descriptors they hold in this process (both ends of each
    control socket, each handle's done and exit fds, a ready one's idle loop: all live by design)."""
    pool = getattr(sys.modules.get('subactor._spawn._warm_pool'), '_pool', None)
    if pool is None:
        return [], set()
    return pool.handles(), set(pool.held_fds())


def _settle_warm_pool(timeout: float) -> bool:
    """Wait up to `timeout` until every idle pooled interpreter is ready: one still warming up holds transient
    fds (files it imports from, its warm-up trio.run's) that are not a leak of whoever is being measured.
    False if there was nothing to wait for."""
    pool = getattr(sys.modules.get('subactor._spawn._warm_pool'), '_pool', None)
    if pool is None or pool.status().warming == 0:
        return False
    pool.settle(timeout)
    return True


def _process_lifetime_fds() -> set[int]:
    """Descriptors that process-wide singletons keep open for the life of the process, once started."""
    fds = set(_warm_pool()[1])
    native = sys.modules.get('subactor._native')
    if native is not None:
        fds.add(native.shelf_taken_fd())  # the shelf's wake-up eventfd (lazily made, never closed)
    tracker = sys.modules.get('multiprocessing.resource_tracker')
    fd = getattr(getattr(tracker, '_resource_tracker', None), '_fd', None)
    if isinstance(fd, int):
        fds.add(fd)
    forkserver = sys.modules.get('multiprocessing.forkserver')
    fd = getattr(getattr(forkserver, '_forkserver', None), '_forkserver_alive_fd', None)
    if isinstance(fd, int):
        fds.add(fd)
    return fds


# A descriptor open on a shared library is the library's own for the life of the process (libffi opens its .so
# once, on first use by ctypes, for its trampolines): not a leak of whoever happened to trigger it.
_SHARED_LIBRARY = re.compile(r'\.so(\.\d+)*$')


def _open_fds() -> dict[int, str]:
    fds = {}
    for name in os.listdir('/proc/self/fd'):
        try:
            target = os.readlink(f'/proc/self/fd/{name}')
        except OSError:  # the listing's own descriptor, closed by now
            continue
        if not _SHARED_LIBRARY.search(target):
            fds[int(name)] = target
    return fds


def _driver_or_none() -> Any:
    if 'subactor._native' not in sys.modules:
        try:
            from . import _native  # noqa: F401
        except ImportError:
            return None
    from . import _driver

    return _driver


def _interpreters(driver: Any) -> dict[str, str]:
    if driver is None:
        return {}
    # Pool handles go from "starting" (no id) to running; read the pool's starting ones before live() and
    # its ids after, so a handle that gets its id in between is still recognised.
    pool_before, _ = _warm_pool()
    pool_starting = sum(1 for handle in pool_before if handle.id is None)
    live = driver.live()
    pool_after, _ = _warm_pool()
    pool_ids = {handle.id for handle in pool_before + pool_after if handle.id is not None}
    labels = driver.interpreter_labels()
    out = {}
    for i, entry in enumerate(live):
        iid = entry['id']
        if iid in pool_ids:
            continue
        if iid is None and pool_starting:
            pool_starting -= 1
            continue
        key = f'interpreter {iid}' if iid is not None else f'interpreter ?{i}'
        label = labels.get(iid)
        out[key] = f"'{entry['name']}' {entry['state']}" + (f' [{label}]' if label else '')
    return out


def snapshot_resources() -> ResourceSnapshot:
    """This interpreter's Python threads (idle trio cache workers excepted), the driver's live interpreters
    (warm pool excepted) and the open file descriptors (process-lifetime singletons' excepted)."""
    idle = _idle_trio_threads()
    threads = {
        t.ident: repr(t.name) for t in threading.enumerate() if t.ident is not None and t.ident not in idle
    }
    interpreters = _interpreters(_driver_or_none())
    lifetime = _process_lifetime_fds()
    fds = _open_fds()
    # Both ends of a lifetime pipe (multiprocessing's helpers hold one end, their processes the other).
    pipes = {target for fd, target in fds.items() if fd in lifetime and target.startswith('pipe:')}
    fds = {fd: target for fd, target in fds.items() if fd not in lifetime and target not in pipes}
    return ResourceSnapshot(threads, interpreters, fds)


def _start_process_singletons() -> None:
    """Start what lives for the whole process before the first snapshot: the driver's io thread."""
    driver = _driver_or_none()
    if driver is not None:
        driver.disarm_watchdog(driver.arm_watchdog(3600, os.devnull))


def _diff(delta: ResourceDelta, before: ResourceSnapshot, after: ResourceSnapshot) -> None:
    delta.before, delta.after = before, after
    # Threads and interpreters by identity (a trio worker renames its thread per job; an interpreter's state
    # changes); fds by number and target (a number reused for another file is a new descriptor).
    for kind in ('threads', 'interpreters', 'fds'):
        b, a = getattr(before, kind), getattr(after, kind)
        same = (lambda k, v, other: k in other) if kind != 'fds' else (lambda k, v, other: other.get(k) == v)
        setattr(delta, f'{kind}_added', {k: v for k, v in a.items() if not same(k, v, b)})
        setattr(delta, f'{kind}_removed', {k: v for k, v in b.items() if not same(k, v, a)})


@contextlib.contextmanager
def track_resource_deltas(
    label: str,
    *,
    writer: Callable[[str], object] | None = print,
    settle: float | None = None,
) -> Iterator[ResourceDelta]:
    """Snapshot threads, live interpreters and open fds before and after the block; report what changed via
    `writer` (print-like; None: silent) and fill in the yielded ResourceDelta. A block that seems to leak
    gets up to `settle` seconds (default LEAK_SETTLE_TIMEOUT) for ending threads and interpreters to go."""
    settle = LEAK_SETTLE_TIMEOUT if settle is None else settle
    if not (0 <= settle < math.inf):
        raise ValueError(f'settle must be finite and >= 0, not {settle!r}')
    _start_process_singletons()
    delta = ResourceDelta(label)
    before = snapshot_resources()
    try:
        yield delta
    finally:
        deadline = time.monotonic() + settle
        while True:
            _diff(delta, before, snapshot_resources())
            if not delta.leaked or time.monotonic() >= deadline:
                break
            if delta.fds_added and _settle_warm_pool(deadline - time.monotonic()):
                continue
            # Polling is the only way here: nothing signals "this foreign thread is gone". Join the leaked
            # Python threads we can see, with the remaining bound, and re-check the others a moment later.
            leaked = [t for t in threading.enumerate() if t.ident in delta.threads_added]
            for thread in leaked:
                if thread is not threading.current_thread():
                    thread.join(max(0.0, min(0.05, deadline - time.monotonic())))
            if not leaked:
                time.sleep(0.01)
        if writer is not None and delta.changed:
            writer(delta.describe())


def resource_delta_fixture(
    *,
    autouse: bool = False,
    writer: Callable[[str], object] | None = print,
    fail_on_leak: bool = False,
    settle: float | None = None,
    name: str | None = None,
) -> Any:
    """A pytest fixture running each test inside `track_resource_deltas(nodeid)`; it yields the ResourceDelta
    (filled in at teardown). With `fail_on_leak`, a test that leaves a thread, interpreter or fd behind fails
    at teardown. Assign it to a name in a conftest.py or test module::

        leak_gate = resource_delta_fixture(autouse=True, fail_on_leak=True, writer=None)
    """
    import pytest

    def fixture(request: pytest.FixtureRequest) -> Iterator[ResourceDelta]:
        with track_resource_deltas(request.node.nodeid, writer=writer, settle=settle) as delta:
            yield delta
        if fail_on_leak and delta.leaked:
            pytest.fail(f'the test left resources behind\n{delta.describe()}', pytrace=False)

    return pytest.fixture(autouse=autouse, name=name)(fixture)


def main(argv: list[str] | None = None) -> int:
    """`python -m subactor.devx dump PID [--json]`: print a serving process's actor tree."""
    return _hangdump.main(argv, description=__doc__.split('\n\n')[0])


if __name__ == '__main__':
    sys.exit(main())
