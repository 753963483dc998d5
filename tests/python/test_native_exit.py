# Process exit with interpreters still running: the _driver atexit hook never lets the process crash or hang.
# Regression tests for conc-anal/abandoned-thread-at-exit.md.
import os
import subprocess
import sys
import textwrap
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# A stuck child: it releases and retakes the GIL over and over (time.sleep), the pattern that crashed 13 runs
# in 60 when CPython finalized its interpreter from the main thread, and it swallows the exit interrupt, so it
# is still running when the hook gives up on it.
STUCK = textwrap.dedent(
    """
    import time
    while True:
        try:
            sum(range(1000))
            time.sleep(0.001)
        except BaseException:
            pass
    """
)


def _run(
    body: str, *, timeout: str = '0.2', extra_env: dict | None = None
) -> tuple[subprocess.CompletedProcess, float]:
    script = textwrap.dedent(
        """
        import os, sys
        from subactor import _driver as driver
        """
    ) + textwrap.dedent(body)
    env = dict(os.environ, SUBACTOR_EXIT_JOIN_TIMEOUT=timeout, **(extra_env or {}))
    env['PYTHONPATH'] = os.path.join(ROOT, 'python') + os.pathsep + env.get('PYTHONPATH', '')
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, '-X', 'dev', '-c', script], capture_output=True, text=True, env=env, timeout=30
    )
    return proc, time.monotonic() - t0


ABANDON = """
h = driver.spawn('import time\\ntime.sleep(30)', name='stuck')
assert not h.join(0.1)
h.abandon()
print('main done', flush=True)
"""


def test_abandoned_interpreter_does_not_hang_or_crash_exit():
    proc, took = _run(ABANDON)
    assert proc.returncode == 0, proc.stderr
    assert took < 10
    assert proc.stdout == 'main done\n'
    # Already abandoned: interrupted once more, not waited for again.
    assert "still running 0.0 s after the exit interrupt (1 'stuck')" in proc.stderr
    assert 'remaining subinterpreters' not in proc.stderr, 'CPython must not finalize it'


def test_exit_does_not_wait_again_for_interpreters_already_abandoned():
    proc, took = _run(ABANDON, timeout='20')
    assert proc.returncode == 0, proc.stderr
    assert took < 10, 'the 20 s exit bound is for interpreters nobody gave up on yet'


def test_exit_waits_for_a_stuck_interpreter_nobody_abandoned_yet():
    body = """
    h = driver.spawn('import time\\ntime.sleep(30)', name='sleeping')
    assert not h.join(0.1)
    """
    proc, took = _run(body, timeout='0.5')
    assert proc.returncode == 0, proc.stderr
    assert "still running 0.5 s after the exit interrupt (1 'sleeping')" in proc.stderr
    assert took >= 0.5


def test_interpreter_releasing_the_gil_in_c_at_exit_is_left_alone():
    body = f"""
    h = driver.spawn({STUCK!r}, name='sleeper')
    assert not h.join(0.05)
    h.abandon()
    """
    for _ in range(3):
        proc, _ = _run(body)
        assert proc.returncode == 0, proc.stderr
        assert 'still running' in proc.stderr


def test_busy_interpreter_left_running_is_interrupted_and_joined_at_exit():
    body = """
    h = driver.spawn('while True:\\n    pass', name='spinner')
    assert not h.join(0.05)
    """
    proc, took = _run(body, timeout='5')
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == '', 'a clean exit: no report, no CPython warning'
    assert took < 10


def test_uncaught_exception_still_exits_nonzero():
    proc, _ = _run(ABANDON + "raise SystemError('main failed')\n")
    assert proc.returncode == 1
    assert 'SystemError: main failed' in proc.stderr
    assert 'still running' in proc.stderr


@pytest.mark.parametrize('value', ['-1', 'soon', 'inf'])
def test_bad_exit_timeout_is_refused_clearly(value):
    proc, _ = _run('', timeout=value)
    assert proc.returncode == 1
    assert (
        f"ValueError: SUBACTOR_EXIT_JOIN_TIMEOUT must be a number of seconds >= 0, not '{value}'"
        in proc.stderr
    )
