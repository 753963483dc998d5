# The pytest plugin, through pytest's own pytester: options, fixtures, markers, actor_test bounds, dump-on-hang.
import importlib.metadata
import textwrap
import time

import pytest

from subactor import available_spawn_methods

pytest_plugins = ['pytester']

# Bound on one inner pytest run (a subprocess): its tests are bounded far below this.
INNER_RUN_TIMEOUT = 120.0


def _plugin_args() -> list[str]:
    """Load the plugin in the inner run unless its pytest11 entry point already does (installed package)."""
    entry_points = importlib.metadata.entry_points(group='pytest11')
    installed = any(ep.value == 'subactor._testing.plugin' for ep in entry_points)
    return [] if installed else ['-p', 'subactor._testing.plugin']


@pytest.fixture
def run(pytester):
    """Run pytest in a subprocess with the plugin loaded; returns its RunResult."""

    def run(*args: str) -> pytest.RunResult:
        return pytester.runpytest_subprocess(
            *_plugin_args(), '-p', 'no:cacheprovider', *args, timeout=INNER_RUN_TIMEOUT
        )

    return run


def test_spawn_backend_choices_come_from_the_registry(run):
    result = run('--help')
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(['*--spawn-backend*'])
    help_text = result.stdout.str()
    for key in available_spawn_methods():
        assert key in help_text, key
    result = run('--spawn-backend=no_such_backend')
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "invalid choice: 'no_such_backend'" in result.stderr.str()


def test_unavailable_backend_stops_the_run_with_one_paragraph(pytester, run):
    pytester.makepyfile('def test_never_runs():\n    raise AssertionError\n')
    result = run('--spawn-backend=subint_fork')
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert '--spawn-backend=subint_fork cannot run here:' in err
    assert 'conc-anal/fork-and-subinterpreters.md' in err
    assert 'Traceback' not in err
    assert 'Choose another backend' in err
    assert 'test_never_runs' not in result.stdout.str()


def test_start_method_fixture_is_the_selected_backend(pytester, run):
    pytester.makepyfile(
        test_method="""
        def test_method(start_method):
            assert start_method == 'mp_spawn'
        """
    )
    run('--spawn-backend=mp_spawn').assert_outcomes(passed=1)
    run().assert_outcomes(failed=1)  # the default backend is trio


ACTOR_TEST_BOUNDS = """
import trio
from subactor.testing import actor_test

@actor_test(root=False)
async def test_default_bound():
    await trio.sleep_forever()

@actor_test(root=False, timeout=0.2)
async def test_own_bound():
    await trio.sleep_forever()

@actor_test(root=False)
async def test_within_bound(start_method):
    assert isinstance(start_method, str)
"""


def test_actor_test_default_bound_and_per_test_override(pytester, run):
    pytester.makepyfile(test_bounds=ACTOR_TEST_BOUNDS)
    t0 = time.monotonic()
    result = run('--actor-test-timeout=0.5', '-k=default_bound or within_bound')
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        ['*exceeded @actor_test timeout=0.5 s (the test was at *test_bounds.py:6 in test_default_bound)*']
    )
    assert 'TooSlowError' not in result.stdout.str()
    result.stdout.fnmatch_lines(['*run with --dump-on-hang=SECONDS*'])
    # The per-test bound wins over a long run default.
    result = run('--actor-test-timeout=600', '-k=own_bound')
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(['*exceeded @actor_test timeout=0.2 s*'])
    assert time.monotonic() - t0 < 60, 'both bounds are far below the run default'
    assert run('--actor-test-timeout=0').ret == pytest.ExitCode.USAGE_ERROR


SKIP_SCOPES = {
    'test_function_scope.py': """
        import pytest

        @pytest.mark.skipon_spawn_backend('trio', reason='function says no')
        def test_skipped():
            raise AssertionError

        @pytest.mark.skipon_spawn_backend('subint')
        def test_runs():
            pass
        """,
    'test_class_scope.py': """
        import pytest

        @pytest.mark.skipon_spawn_backend('trio', reason='class says no')
        class TestAll:
            def test_skipped(self):
                raise AssertionError
        """,
    'test_module_single.py': """
        import pytest

        pytestmark = pytest.mark.skipon_spawn_backend('mp_spawn', 'trio', reason='module says no')

        def test_skipped():
            raise AssertionError
        """,
    'test_module_list.py': """
        import pytest

        pytestmark = [pytest.mark.slow, pytest.mark.skipon_spawn_backend('trio', reason='list says no')]

        def test_skipped():
            raise AssertionError
        """,
}


def test_skipon_spawn_backend_at_every_scope(pytester, run):
    pytester.makeini('[pytest]\nmarkers =\n    slow: slow\n')
    pytester.makepyfile(**{name[:-3]: textwrap.dedent(src) for name, src in SKIP_SCOPES.items()})
    result = run('--spawn-backend=trio', '--strict-markers', '-rs')
    result.assert_outcomes(passed=1, skipped=4)
    for reason in ('function says no', 'class says no', 'module says no', 'list says no'):
        result.stdout.fnmatch_lines([f'*{reason}*'])
    # On another backend none of them matches: the skipped tests run (and fail on purpose).
    run('--spawn-backend=mp_forkserver', '--strict-markers').assert_outcomes(passed=1, failed=4)


@pytest.mark.parametrize('args', ["'no_such_backend'", ''], ids=['unknown_name', 'no_name'])
def test_skipon_spawn_backend_needs_registered_names(pytester, run, args):
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.skipon_spawn_backend({args})
        def test_marked():
            pass
        """
    )
    result = run('--spawn-backend=trio')
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert 'needs registered backend names' in result.stderr.str()
    assert 'test_marked' in result.stderr.str()


HANGING_TESTS = """
import pathlib
import time

DUMPS = pathlib.Path({dumps!r})
BOUND = 30.0


def wait_for_own_dump(name):
    # Spin in Python (holding the GIL) until the watchdog has written this test's complete dump.
    deadline = time.monotonic() + BOUND
    while time.monotonic() < deadline:
        for path in DUMPS.glob(f'*{{name}}*.txt'):
            if '=== end of subactor stack dump ===' in path.read_text():
                return
    raise AssertionError('no dump within the bound')


def test_hangs_then_fails():
    wait_for_own_dump('test_hangs_then_fails')
    raise AssertionError('failed after hanging')


def test_slow_but_passes():
    wait_for_own_dump('test_slow_but_passes')


def test_fast():
    pass
"""


def test_dump_on_hang_writes_one_file_per_slow_test_and_shows_it_on_failure(pytester, run):
    dumps = pytester.path / 'dumps'
    pytester.makepyfile(test_hanging=HANGING_TESTS.format(dumps=str(dumps)))
    result = run('--dump-on-hang=0.1', f'--dump-on-hang-dir={dumps}')
    result.assert_outcomes(passed=2, failed=1)
    out = result.stdout.str()
    assert 'subactor dump-on-hang (' in out
    assert 'in wait_for_own_dump' in out and 'in test_hangs_then_fails' in out, out
    files = sorted(p.name for p in dumps.glob('*.txt'))
    assert len(files) == 2, files
    assert all('-trio-' in f for f in files), 'named after the backend too'
    assert sorted(p.name for p in dumps.glob('*.json')) == [f[: -len('.txt')] + '.json' for f in files]
    assert any('test_hangs_then_fails' in f for f in files)
    assert any('test_slow_but_passes' in f for f in files)
    assert 'stack dumps of 2 test(s)' in out


def test_dump_on_hang_default_directory_and_bad_values(pytester, run):
    pytester.makepyfile('def test_fast():\n    pass\n')
    result = run('--dump-on-hang=5')
    result.assert_outcomes(passed=1)
    assert (pytester.path / '.subactor-dumps').is_dir()
    assert list((pytester.path / '.subactor-dumps').iterdir()) == [], 'no file for a test that never fired'
    for bad in ('0', '-1', 'inf'):
        assert run(f'--dump-on-hang={bad}').ret == pytest.ExitCode.USAGE_ERROR, bad
    (pytester.path / 'a_file').write_text('')
    result = run('--dump-on-hang=5', f'--dump-on-hang-dir={pytester.path / "a_file"}')
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert '--dump-on-hang cannot be used' in result.stderr.str()


HUNG_SUBINT_CHILD = """
import pytest
import trio

import subactor
from subactor.testing import actor_test


def spin_forever_in_named_function():
    while True:
        pass


@subactor.context
async def spin_in_child(ctx):
    await ctx.started('spinning')
    spin_forever_in_named_function()


@actor_test(timeout=5.0, bounds={'cancel_timeout': 0.3, 'interrupt_join_timeout': 1.5})
async def test_hung_child():
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('hung_child', enable_modules=['test_hung_child'])
        async with portal.open_context(spin_in_child) as (_, first):
            assert first == 'spinning'
            await trio.sleep_forever()
"""


@pytest.mark.slow
@pytest.mark.skipif(not available_spawn_methods()['subint'].available, reason='needs the subint backend')
def test_dump_of_a_hung_subint_child_names_the_function_it_is_stuck_in(pytester, run):
    pytester.makepyfile(test_hung_child=HUNG_SUBINT_CHILD)
    dumps = pytester.path / 'dumps'
    # The dump fires 2.5 s into the test (the child spins within a few hundred ms of the test's start), the
    # test's own bound ends it at 5 s.
    result = run('--spawn-backend=subint', '--dump-on-hang=2.5', f'--dump-on-hang-dir={dumps}')
    result.assert_outcomes(failed=1)
    (record, dump) = sorted(dumps.iterdir())
    assert dump.name.endswith('.txt') and '-subint-' in dump.name, dump.name
    assert record.name == dump.with_suffix('.json').name
    result.stdout.fnmatch_lines([f'*exceeded @actor_test timeout=5 s*{dump}*'])
    text = dump.read_text()
    sections = text.split('\ninterpreter ')[1:]
    child = [s for s in sections if "[actor 'hung_child']" in s.splitlines()[0]]
    assert child, text
    assert 'in spin_forever_in_named_function' in child[0], text
    assert 'in spin_forever_in_named_function' in result.stdout.str(), 'the failing report shows the dump'


def test_resource_delta_fixture_fails_a_test_that_leaks(pytester, run):
    pytester.makeconftest(
        """
        from subactor.devx import resource_delta_fixture

        leak_gate = resource_delta_fixture(autouse=True, fail_on_leak=True, writer=None, settle=0)
        """
    )
    pytester.makepyfile(
        """
        import os

        KEEP = []

        def test_leaks_a_pipe():
            KEEP.append(os.pipe())

        def test_clean():
            r, w = os.pipe()
            os.close(r)
            os.close(w)
        """
    )
    result = run()
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        ['*ERROR at teardown of test_leaks_a_pipe*', '*left resources behind*', '*fds: +*pipe:*']
    )


STUCK_UNTIL_TIMEOUT = """
import threading


def block_in_c_in_named_function():
    threading.Event().wait()  # no bound on purpose: pytest-timeout ends the run


def test_stuck():
    block_in_c_in_named_function()
"""


def test_dump_is_on_disk_when_pytest_timeout_thread_method_ends_the_run(pytester, run):
    pytest.importorskip('pytest_timeout')
    pytester.makepyfile(test_stuck=STUCK_UNTIL_TIMEOUT)
    dumps = pytester.path / 'dumps'
    result = run(
        '-p',
        'timeout',
        '--timeout=3',
        '--timeout-method=thread',
        '--dump-on-hang=0.5',
        f'--dump-on-hang-dir={dumps}',
    )
    assert result.ret != pytest.ExitCode.OK
    assert 'Timeout' in result.stdout.str() + result.stderr.str()
    (dump,) = dumps.glob('*.txt')
    assert 'test_stuck' in dump.name
    text = dump.read_text()
    assert 'in block_in_c_in_named_function' in text, text
    assert text.rstrip().endswith('=== end of subactor stack dump ===')


def test_failing_run_that_abandons_an_interpreter_still_exits_nonzero(pytester, run):
    """An interpreter stuck in C at exit makes the process leave with os._exit(); the run's status must survive it
    (it once exited 0 after a failure, and CI read that as a pass)."""
    pytester.makepyfile(
        """
        from subactor import _driver

        def test_fails_leaving_a_stuck_interpreter():
            handle = _driver.spawn('import time\\ntime.sleep(30)', name='stuck-in-c')
            assert not handle.join(0.05)
            handle.abandon()
            raise AssertionError('failed on purpose')

        def test_passes_after_it():  # pytest clears sys.last_exc here: the hook's own guess would say 0
            pass
        """
    )
    result = run()
    assert result.ret == 1, result.stderr.str()
    assert 'os._exit(1)' in result.stderr.str()


ASYNC_HANG_IN_CHILD = """
import trio

import subactor
from subactor.testing import actor_test


async def sleep_forever_in_named_function():
    await trio.sleep_forever()


@subactor.context
async def park_in_child(ctx):
    await ctx.started('parked')
    await sleep_forever_in_named_function()


@actor_test(timeout=4.0, bounds={'cancel_timeout': 0.3, 'interrupt_join_timeout': 1.5})
async def test_async_hang():
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('hung_child', enable_modules=['test_async_hang'])
        async with portal.open_context(park_in_child) as (_, first):
            assert first == 'parked'
            await trio.sleep_forever()
"""


@pytest.mark.slow
@pytest.mark.parametrize('backend', [k for k, info in available_spawn_methods().items() if info.available])
def test_an_async_hang_in_a_child_names_the_hung_function_on_every_backend(pytester, run, backend):
    """The issue's first case: a child parked at a checkpoint (its loop idle in epoll) has no thread stack there;
    the dump's task tree names it. Dumped when the test's own timeout ends it (before --dump-on-hang=60 would)."""
    pytester.makepyfile(test_async_hang=ASYNC_HANG_IN_CHILD)
    dumps = pytester.path / 'dumps'
    result = run(f'--spawn-backend={backend}', '--dump-on-hang=60', f'--dump-on-hang-dir={dumps}')
    result.assert_outcomes(failed=1)
    (dump,) = dumps.glob('*.txt')
    assert f'-{backend}-' in dump.name
    result.stdout.fnmatch_lines(
        [
            f'*exceeded @actor_test timeout=4 s (the test was at *test_async_hang.py:23 in test_async_hang)*{dump}*'
        ]
    )
    text = dump.read_text()
    child = text[text.index("--- actor 'hung_child'") :]
    assert f'[{backend}]' in child.splitlines()[0], child
    assert 'in sleep_forever_in_named_function' in child, text
    assert "serving test_async_hang.park_in_child() for 'root'" in child, text
