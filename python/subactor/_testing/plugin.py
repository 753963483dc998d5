"""The pytest plugin: `--spawn-backend`, the `start_method` fixture, `actor_test`, backend skip markers, and
`--dump-on-hang`.

Registered through the `pytest11` entry point (an installed package loads it by itself; a checkout loads it
with `-p subactor._testing.plugin`).

- `--spawn-backend=NAME` picks the spawn method every actor test runs on; an unavailable one stops the run at
  configure time with one paragraph saying why.
- `@pytest.mark.skipon_spawn_backend(*names, reason=...)` skips at function, class or module scope; an
  unknown name is an error, not a silent no-op.
- `--dump-on-hang=SECONDS` arms `subactor.devx.dump_on_hang` around every test (setup, call and teardown):
  a test still running after SECONDS gets a dump of its actor tree (every task and thread of every actor,
  process children included) written to `--dump-on-hang-dir` (default `<rootdir>/.subactor-dumps`, kept out of
  pytest's temporary directories so the file survives a run that is killed), one file per test named after its
  node id and the spawn backend (a loop over backends keeps each one's), its JSON form beside it. A failing
  test's report shows its dump; the files of tests whose dump never fired are never created, and the terminal
  summary lists the ones that were. An `@actor_test` that exceeds its timeout before the dump fired gets one
  written at that moment, and its failure says "exceeded @actor_test timeout=N s" and names the file.
- pytest-timeout: use `timeout_method = "thread"` (or `--timeout-method=thread`). The `signal` method relies
  on a SIGALRM handler, which Python runs only on the main thread of the main interpreter when that thread
  gets the GIL and reaches the eval loop: under the shared GIL, subinterpreter actors spinning in Python
  starve it, and a main thread waiting in C (a bounded join) does not run it at all, exactly like SIGINT
  (conc-anal/sigint-starvation-shared-gil.md). Its exception would also land inside trio's machinery at an
  arbitrary point. The thread method needs neither; set `--dump-on-hang` below the timeout, so the dump
  (which, unlike pytest-timeout's own, includes the subinterpreters) is on disk before it ends the run.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import math
import os
import re
import sys
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import pytest

from .._spawn._registry import available_spawn_methods, spawn_method_info

DEFAULT_BACKEND = 'trio'
# Default bound of an `actor_test`; override per run with `--actor-test-timeout` and per test with
# `@actor_test(timeout=...)`.
DEFAULT_TEST_TIMEOUT = 30.0
_test_timeout = DEFAULT_TEST_TIMEOUT  # this run's default (--actor-test-timeout)
# Where `--dump-on-hang` writes, relative to pytest's rootdir, unless `--dump-on-hang-dir` says otherwise.
DEFAULT_DUMP_DIR = '.subactor-dumps'
_MARKER = 'skipon_spawn_backend'
# The --dump-on-hang watchdog of the test running now (None without the option), for `actor_test`'s timeout.
_armed_dump: Any = None
# Tests whose dump `actor_test` wrote when they timed out (the watchdog had not fired yet).
_dumped_at_timeout: set[str] = set()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup('subactor')
    group.addoption(
        '--spawn-backend',
        action='store',
        dest='spawn_backend',
        default=DEFAULT_BACKEND,
        choices=sorted(available_spawn_methods()),
        help='spawn method the actor tests run on (default: %(default)s)',
    )
    group.addoption(
        '--actor-test-timeout',
        action='store',
        dest='actor_test_timeout',
        default=DEFAULT_TEST_TIMEOUT,
        type=float,
        metavar='SECONDS',
        help='default bound of an @actor_test test (default: %(default)s); @actor_test(timeout=...) overrides',
    )
    group.addoption(
        '--dump-on-hang',
        action='store',
        dest='dump_on_hang',
        default=None,
        type=float,
        metavar='SECONDS',
        help='write the stacks of every thread of every interpreter to a file when a test runs longer than '
        'SECONDS; a failing test shows its dump',
    )
    group.addoption(
        '--dump-on-hang-dir',
        action='store',
        dest='dump_on_hang_dir',
        default=None,
        metavar='DIR',
        help=f'directory for the --dump-on-hang files (default: <rootdir>/{DEFAULT_DUMP_DIR})',
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        'markers',
        f'{_MARKER}(*backends, reason=...): skip this test when running with one of these spawn backends',
    )
    key = config.getoption('spawn_backend', DEFAULT_BACKEND)
    info = spawn_method_info(key)
    if not info.available:
        raise pytest.UsageError(
            f'--spawn-backend={key} cannot run here: {info.reason}. '
            f'Choose another backend ({", ".join(k for k, i in available_spawn_methods().items() if i.available)}) '
            'or run the suite under an interpreter that supports this one.'
        )
    global _test_timeout
    _test_timeout = config.getoption('actor_test_timeout', DEFAULT_TEST_TIMEOUT)
    if not (0 < _test_timeout < math.inf):
        raise pytest.UsageError(
            f'--actor-test-timeout needs a finite number of seconds > 0, not {_test_timeout!r}'
        )
    seconds = config.getoption('dump_on_hang', None)
    if seconds is not None:
        config.pluginmanager.register(_HangDumps(config, seconds), _HangDumps.NAME)


class _HangDumps:
    """The --dump-on-hang machinery, registered only when the option is given."""

    NAME = 'subactor-dump-on-hang'

    def __init__(self, config: pytest.Config, seconds: float) -> None:
        if not (0 < seconds < math.inf):
            raise pytest.UsageError(f'--dump-on-hang needs a finite number of seconds > 0, not {seconds!r}')
        raw = config.getoption('dump_on_hang_dir', None)
        self.directory = Path(raw).absolute() if raw else config.rootpath / DEFAULT_DUMP_DIR
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            from .._hangdump import _check_writable, _driver

            _check_writable(self.directory / 'probe')
            _driver()
        except (OSError, RuntimeError) as exc:
            raise pytest.UsageError(f'--dump-on-hang cannot be used: {exc}') from None
        self.seconds = seconds
        self.backend = config.getoption('spawn_backend', DEFAULT_BACKEND)
        self.written: list[Path] = []
        self._armed: dict[str, Any] = {}  # nodeid -> the HangDump of the phase(s) running now
        self._fired: set[str] = set()

    def path_for(self, nodeid: str) -> Path:
        readable = re.sub(r'[^A-Za-z0-9_.-]+', '_', nodeid).strip('_')[:150]
        digest = hashlib.sha1(nodeid.encode()).hexdigest()[:8]
        return self.directory / f'{readable}-{self.backend}-{digest}.txt'

    def _arm(self, item: pytest.Item) -> None:
        from .._hangdump import arm_hang_dump

        global _armed_dump
        self._armed[item.nodeid] = _armed_dump = arm_hang_dump(self.seconds, path=self.path_for(item.nodeid))

    def _disarm(self, item: pytest.Item) -> None:
        global _armed_dump
        dump = self._armed.pop(item.nodeid, None)
        if dump is _armed_dump:
            _armed_dump = None
        fired = dump is not None and dump.disarm()
        if fired or item.nodeid in _dumped_at_timeout:
            self._fired.add(item.nodeid)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None]:
        self.path_for(item.nodeid).unlink(missing_ok=True)  # a dump from an earlier run
        self._arm(item)
        try:
            return (yield)
        finally:
            self._disarm(item)
            _dumped_at_timeout.discard(item.nodeid)
            if item.nodeid in self._fired:
                self._fired.discard(item.nodeid)
                self.written.append(self.path_for(item.nodeid))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if report.failed and item.nodeid in self._armed:
            # Stop the watchdog (waiting for a dump being written), show it, and keep watching what is left.
            self._disarm(item)
            if item.nodeid in self._fired:
                path = self.path_for(item.nodeid)
                text = path.read_text(encoding='utf-8', errors='replace')
                report.sections.append((f'subactor dump-on-hang ({path})', text))
            if call.when != 'teardown':
                self._arm(item)
        return report

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.written:
            terminalreporter.write_sep(
                '-', f'subactor: stack dumps of {len(self.written)} test(s) that ran over {self.seconds:g} s'
            )
            for path in self.written:
                terminalreporter.write_line(str(path))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Hand the run's status to the driver's exit hook: if an abandoned interpreter makes the process leave with
    os._exit(), it must still exit with pytest's status, never 0 after a failure."""
    driver = sys.modules.get('subactor._driver')
    if driver is not None:
        driver.set_exit_status(int(exitstatus))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    backend = config.getoption('spawn_backend', DEFAULT_BACKEND)
    known = set(available_spawn_methods())
    for item in items:
        for mark in item.iter_markers(name=_MARKER):
            unknown = [name for name in mark.args if name not in known]
            if unknown or not mark.args:
                raise pytest.UsageError(
                    f'{item.nodeid}: @pytest.mark.{_MARKER} needs registered backend names, got {unknown or "none"}; '
                    f'valid: {", ".join(sorted(known))}'
                )
            if backend in mark.args:
                reason = mark.kwargs.get('reason', f'not supported on the {backend!r} spawn backend')
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def start_method(request: pytest.FixtureRequest) -> str:
    """The spawn method selected with --spawn-backend."""
    return str(request.config.getoption('spawn_backend', DEFAULT_BACKEND))


def actor_test(
    fn: Callable[..., Any] | None = None,
    *,
    timeout: float | None = None,
    root: bool = True,
    **root_kwargs: Any,
) -> Any:
    """Run an async test under trio, bounded by `trio.fail_after(timeout)` (default: `--actor-test-timeout`,
    itself DEFAULT_TEST_TIMEOUT unless given), inside a root actor on the selected
    backend (`root=False`: no root actor; `root_kwargs` go to `open_root_actor`). The test may request the
    `start_method` fixture and any other fixture."""
    if fn is None:
        return functools.partial(actor_test, timeout=timeout, root=root, **root_kwargs)
    if not inspect.iscoroutinefunction(fn):
        raise TypeError(f'@actor_test needs an async test function, not {fn!r}')
    sig = inspect.signature(fn)
    wants_method = 'start_method' in sig.parameters

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        import trio

        method = kwargs['start_method'] if wants_method else kwargs.pop('start_method')
        bound = _test_timeout if timeout is None else timeout
        where: list[str] = []

        async def main() -> None:
            with trio.CancelScope() as scope:
                coro = _in_root(fn, method, root_kwargs, args, kwargs) if root else fn(*args, **kwargs)
                _watch_timeout(scope, bound, coro, fn, where)
                await coro
            if scope.cancelled_caught:
                _timed_out(bound, where)

        trio.run(main)

    if not wants_method:
        params = [*sig.parameters.values(), inspect.Parameter('start_method', inspect.Parameter.KEYWORD_ONLY)]
        wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    return wrapper


async def _in_root(fn: Callable[..., Any], method: str, root_kwargs: Any, args: Any, kwargs: Any) -> None:
    from .._root import open_root_actor

    async with open_root_actor(start_method=method, **root_kwargs):
        await fn(*args, **kwargs)


def _watch_timeout(scope: Any, bound: float, coro: Any, fn: Callable[..., Any], where: list[str]) -> None:
    """Cancel `scope` `bound` seconds from now, from a system task that first notes where the test's coroutine is
    suspended and, with --dump-on-hang set above the bound (its own dump would come too late), dumps the actor tree
    while it still hangs. A fallback deadline covers a dump that never completes."""
    import trio

    from .._hangdump import DUMP_COMPLETE_TIMEOUT, arm_hang_dump

    deadline = trio.current_time() + bound
    armed = _armed_dump
    dump_now = armed is not None and armed.seconds >= bound
    # The watcher cancels; the scope's own deadline is a fallback, later so the watcher sees the test suspended.
    scope.deadline = deadline + 1.0 + (DUMP_COMPLETE_TIMEOUT if dump_now else 0)
    nodeid = os.environ.get('PYTEST_CURRENT_TEST', '').rpartition(' (')[0]

    async def watch() -> None:
        await trio.sleep_until(deadline)
        where.extend(_where_in(fn, coro))
        if dump_now:
            dump = arm_hang_dump(1e-3, path=armed.path)
            await trio.to_thread.run_sync(dump.wait, DUMP_COMPLETE_TIMEOUT)
            if dump.disarm():
                _dumped_at_timeout.add(nodeid)
        scope.cancel()

    trio.lowlevel.spawn_system_task(watch, name='actor_test timeout')


def _timed_out(bound: float, where: list[str]) -> None:
    """Fail an `actor_test` that exceeded its bound: say so, where the test was, and where its hang dump is."""
    message = f'exceeded @actor_test timeout={bound:g} s'
    if where:
        message += f' (the test was at {where[-1]})'
    dump = _armed_dump
    if dump is None:
        message += '; run with --dump-on-hang=SECONDS (below the timeout) to see where every task of every actor waits'
    else:
        message += f'; where every task of every actor waits: {dump.path}'
    pytest.fail(message, pytrace=False)


def _where_in(fn: Callable[..., Any], coro: Any) -> list[str]:
    """The lines of `fn`'s file in the await chain of the suspended coroutine `coro`, outermost first."""
    from .._tasktree import _await_chain

    target = getattr(getattr(fn, '__code__', None), 'co_filename', None)
    return [f'{file}:{line} in {function}' for file, line, function in _await_chain(coro) if file == target]
