# The native subinterpreter driver from Python: lifecycle, outcomes, interrupt, abandon, done and exit fds, ending,
# bad input.
import contextlib
import math
import os
import select
import threading
import time

import pytest

from subactor import _driver as driver
from subactor import _native as native


def _native_threads() -> set[int]:
    return {int(tid) for tid in os.listdir('/proc/self/task')}


@pytest.fixture(autouse=True)
def no_leaks():
    driver.disarm_watchdog(driver.arm_watchdog(3600, os.devnull))  # the io thread is lazy: start it first
    before = _native_threads()
    yield
    assert driver.live_count() == 0, driver.live()
    # Threads the driver left behind; Python threads (trio's workers, other fixtures' helpers) are not ours.
    python_threads = {t.native_id for t in threading.enumerate()}
    left = _native_threads() - before - python_threads
    assert not left, f'native threads left behind: {[_thread_name(tid) for tid in left]}'


def _thread_name(tid: int) -> str:
    try:
        with open(f'/proc/self/task/{tid}/comm') as f:
            return f'{tid} {f.read().strip()}'
    except OSError:
        return f'{tid} (gone)'


@pytest.fixture
def pipe():
    """(read fd, write fd) for "got here"/"go on" signals between the test and a child interpreter."""
    r, w = os.pipe()
    yield r, w
    os.close(r)
    os.close(w)


def _receive(fd: int, timeout: float = 10.0) -> None:
    ready, _, _ = select.select([fd], [], [], timeout)
    assert ready, 'the child never signalled'
    assert os.read(fd, 1) == b'x'


SPIN = """
import os
def spin_here():
    os.write({w}, b'x')
    while True:
        pass
spin_here()
"""


def test_spawn_runs_and_reports_ok():
    handle = driver.spawn('x = 6 * 7\nassert x == 42', name='basic')
    assert handle.name == 'basic'
    assert handle.join(10)
    assert handle.state == 'finished'
    assert isinstance(handle.id, int)
    assert handle.id > 0
    assert isinstance(handle.thread_id, int)
    assert handle.running_for > 0
    outcome = handle.outcome
    assert outcome.ok
    assert outcome.exit_code == 0
    assert (outcome.exc_type, outcome.exc_message, outcome.traceback) == (None, None, None)
    assert handle.join(0), 'join is idempotent once it returned True'
    handle.close()
    handle.close()


def test_outcome_carries_exception_type_message_and_traceback():
    handle = driver.spawn('import json\ndef inner():\n    json.loads("{")\ninner()\n')
    assert handle.join(10)
    outcome = handle.outcome
    assert not outcome.ok
    assert outcome.exit_code is None
    assert outcome.exc_type == 'json.decoder.JSONDecodeError'
    assert 'Expecting property name' in outcome.exc_message
    assert 'line 3, in inner' in outcome.traceback
    assert outcome.traceback.rstrip().splitlines()[-1].startswith('json.decoder.JSONDecodeError: ')
    handle.close()


@pytest.mark.parametrize(('code', 'ok', 'exit_code'), [('None', True, 0), ('0', True, 0), ('5', False, 5)])
def test_system_exit_code_is_recorded(code, ok, exit_code):
    handle = driver.spawn(f'import sys\nsys.exit({code})')
    assert handle.join(10)
    assert (handle.outcome.ok, handle.outcome.exit_code) == (ok, exit_code)
    handle.close()


def test_thirty_two_interpreters_run_at_once(pipe):
    r, w = pipe
    go_r, go_w = os.pipe()
    try:
        code = f"import os\nos.write({w}, b'x')\nos.read({go_r}, 1)\n"
        handles = [driver.spawn(code, name=f'n{i}') for i in range(32)]
        for _ in handles:
            _receive(r)
        live = driver.live()
        assert len(live) == 32
        assert {entry['state'] for entry in live} == {'running'}
        assert len({entry['thread_id'] for entry in live}) == 32
        os.write(go_w, b'x' * 32)
        assert all(h.join(20) for h in handles)
        assert all(h.outcome.ok for h in handles)
    finally:
        os.close(go_r)
        os.close(go_w)


def test_interrupt_ends_busy_loop_within_a_second(pipe):
    r, w = pipe
    handle = driver.spawn(SPIN.format(w=w), name='busy')
    _receive(r)
    t0 = time.monotonic()
    assert handle.interrupt()
    assert handle.join(5)
    assert time.monotonic() - t0 < 1.0
    assert handle.outcome.exc_type == 'KeyboardInterrupt'
    assert handle.interrupt() is False, 'a finished interpreter is not interrupted'


def test_interrupt_with_system_exit(pipe):
    r, w = pipe
    handle = driver.spawn(SPIN.format(w=w))
    _receive(r)
    assert handle.interrupt('SystemExit')
    assert handle.join(5)
    assert (handle.outcome.ok, handle.outcome.exit_code) == (True, 0)


def test_join_times_out_on_thread_blocked_in_c_then_abandon(pipe):
    r, w = pipe
    release_r, release_w = os.pipe()
    try:
        handle = driver.spawn(f"import os\nos.write({w}, b'x')\nos.read({release_r}, 1)\n", name='stuck')
        _receive(r)
        t0 = time.monotonic()
        assert not handle.join(0.2)
        assert 0.2 <= time.monotonic() - t0 < 1.0
        assert handle.interrupt(), 'delivered, but only seen once os.read returns'
        assert not handle.join(0.05)
        assert handle.abandon()
        assert handle.state == 'abandoned'
        [entry] = driver.live()
        assert (entry['name'], entry['state']) == ('stuck', 'abandoned')
        os.write(release_w, b'x')  # let it go: it ends its own interpreter, on its own thread
        assert handle.join(10)
        assert handle.outcome.exc_type == 'KeyboardInterrupt'
        assert handle.abandon() is False
    finally:
        os.close(release_r)
        os.close(release_w)


def test_exit_fd_is_readable_once_finished_and_stays_readable(pipe):
    r, w = pipe
    handle = driver.spawn(f'import os\nos.read({r}, 1)\n')
    assert select.select([handle.exit_fd], [], [], 0)[0] == []
    os.write(w, b'x')
    assert select.select([handle.exit_fd], [], [], 10)[0] == [handle.exit_fd]
    assert select.select([handle.exit_fd], [], [], 0)[0] == [handle.exit_fd], 'level-triggered'
    assert handle.join(0), 'readable implies finished'
    assert int.from_bytes(os.read(handle.exit_fd, 8), 'little') == 1, 'written exactly once'
    handle.close()


# An interpreter whose finalization (Py_EndInterpreter clearing __main__) blocks until a byte (or EOF) arrives on
# fd {r}: it stays 'ending' for as long as the test wants.
BLOCK_FINALIZATION = """
import os
class BlockFinalization:
    def __del__(self, _read=os.read):
        _read({r}, 1)
blocker = BlockFinalization()
"""


def _eventfds() -> int:
    count = 0
    for name in os.listdir('/proc/self/fd'):
        try:
            count += os.readlink(f'/proc/self/fd/{name}') == 'anon_inode:[eventfd]'
        except OSError:  # the listing's own descriptor
            pass
    return count


# conc-anal/subint-finalization-off-the-teardown-path.md
def test_done_fd_is_readable_while_the_interpreter_is_still_ending(pipe):
    r, w = pipe
    handle = driver.spawn(BLOCK_FINALIZATION.format(r=r) + 'import sys\nsys.exit(4)\n', name='ending')
    assert select.select([handle.done_fd], [], [], 10)[0] == [handle.done_fd]
    assert handle.state == 'ending'
    assert (handle.outcome.ok, handle.outcome.exit_code) == (False, 4), 'the outcome is there at done time'
    assert select.select([handle.exit_fd], [], [], 0)[0] == [], 'finished only once finalized'
    assert not handle.join(0.05)
    assert handle.interrupt() is False, 'an ending interpreter is not interrupted'
    [entry] = driver.live()
    assert (entry['name'], entry['state']) == ('ending', 'ending'), 'still live while ending'
    os.write(w, b'x')
    assert handle.join(10)
    assert handle.state == 'finished'
    assert select.select([handle.exit_fd, handle.done_fd], [], [], 0)[0] == [handle.exit_fd, handle.done_fd]
    handle.close()


def test_close_while_ending_releases_the_fds_when_it_finishes(pipe):
    r, w = pipe
    before = _eventfds()
    handle = driver.spawn(BLOCK_FINALIZATION.format(r=r), name='closed-while-ending')
    assert _eventfds() == before + 2, 'done_fd and exit_fd'
    assert select.select([handle.done_fd], [], [], 10)[0]
    handle.close()  # no error: released when it finishes
    handle.close()
    with pytest.raises(RuntimeError, match='is closed'):
        _ = handle.done_fd
    assert handle.state == 'ending'
    assert _eventfds() == before + 2, 'the worker still owns them'
    os.write(w, b'x')
    assert handle.join(10), 'join works on a closed handle'
    assert handle.state == 'finished'
    assert _eventfds() == before, 'the worker closed both when it finished'
    assert handle.outcome.ok


def test_wait_done_returns_before_the_interpreter_finishes(pipe):
    trio = pytest.importorskip('trio')
    r, w = pipe

    async def main():
        handle = driver.spawn(BLOCK_FINALIZATION.format(r=r) + 'raise ValueError("late words")\n')
        with trio.fail_after(10):
            outcome = await driver.wait_done(handle)
        assert (outcome.exc_type, outcome.exc_message) == ('ValueError', 'late words')
        assert handle.state == 'ending'
        os.write(w, b'x')
        with trio.fail_after(10):
            assert (await driver.wait_exit(handle)) is outcome or handle.outcome.exc_type == 'ValueError'
        handle.close()

    trio.run(main)


def test_wait_exit_wakes_a_trio_loop():
    trio = pytest.importorskip('trio')

    async def main():
        handle = driver.spawn('import time\ntime.sleep(0.05)')
        with trio.fail_after(10):
            outcome = await driver.wait_exit(handle)
        assert outcome.ok
        handle.close()

    trio.run(main)


def test_closed_and_running_handles_refuse_clearly(pipe):
    r, w = pipe
    handle = driver.spawn(f'import os\nos.read({r}, 1)\n')
    with pytest.raises(RuntimeError, match=r'^cannot close interpreter (\d+|\'\') \(still running\)$'):
        handle.close()
    os.write(w, b'x')
    assert handle.join(10)
    handle.close()
    for use in (handle.interrupt, handle.abandon, lambda: handle.exit_fd, lambda: handle.done_fd):
        with pytest.raises(RuntimeError, match=rf'^interpreter {handle.id} is closed$'):
            use()
    assert handle.join(1), 'join needs no descriptor: it works on a closed handle'
    with pytest.raises(RuntimeError, match='is closed'):
        driver.interrupt_after(handle, 1)
    assert handle.state == 'finished', 'the record outlives the fd'
    assert handle.outcome.ok


@pytest.mark.parametrize(
    ('call', 'error', 'message'),
    [
        (lambda: driver.spawn(b'pass'), TypeError, "code must be a str, not b'pass'"),
        (lambda: driver.spawn('pass', name=3), TypeError, 'name must be a str, not 3'),
        (lambda: driver.spawn('a\0b'), ValueError, 'code must not contain NUL characters'),
        (lambda: driver.shutdown(-1), ValueError, 'timeout must be a finite number >= 0, not -1.0'),
        (lambda: driver.shutdown(math.nan), ValueError, 'timeout must be a finite number >= 0, not nan'),
        (lambda: driver.arm_watchdog(math.inf, '/dev/null'), ValueError, 'seconds must be a finite number'),
    ],
)
def test_bad_module_arguments(call, error, message):
    with pytest.raises(error, match='^' + message.replace('(', r'\(').replace(')', r'\)')):
        call()


def test_bad_handle_arguments():
    handle = driver.spawn('pass')
    try:
        for timeout in (-0.5, math.nan, math.inf):
            with pytest.raises(ValueError, match=r'^timeout must be a finite number >= 0, not '):
                handle.join(timeout)
        with pytest.raises(
            ValueError, match=r"^exc must name a builtin BaseException subclass, not 'print'$"
        ):
            handle.interrupt('print')
        with pytest.raises(ValueError, match=r"^exc must name a builtin BaseException subclass, not 'Nope'$"):
            handle.interrupt('Nope')
        with pytest.raises(TypeError, match=r"^exc must be a str, not <class 'KeyboardInterrupt'>$"):
            handle.interrupt(KeyboardInterrupt)
        with pytest.raises(ValueError, match=r'^seconds must be a finite number >= 0, not -1.0$'):
            driver.interrupt_after(handle, -1)
    finally:
        assert handle.join(10)
        handle.close()


def test_live_describes_each_running_handle(pipe):
    r, w = pipe
    handle = driver.spawn(f'import os\nos.read({r}, 1)\n', name='described')
    try:
        [entry] = driver.live()
        assert driver.live_count() == 1
        assert entry['name'] == 'described'
        assert entry['state'] in {'starting', 'running'}
        assert entry['parent_id'] == driver.current_interpreter_id() == 0
        assert entry['running_for'] >= 0
    finally:
        os.write(w, b'x')
        assert handle.join(10)
    assert driver.live() == []


def test_threads_of_the_interpreter_finish_before_it_ends(pipe):
    r, w = pipe
    code = (
        'import os, threading, time\n'
        'def later():\n'
        '    time.sleep(0.1)\n'
        f"    os.write({w}, b'x')\n"
        'threading.Thread(target=later).start()  # daemon by default on a foreign thread\n'
    )
    handle = driver.spawn(code)
    assert handle.join(10)
    assert select.select([r], [], [], 0)[0] == [r], 'the interpreter ended before its thread did'


def test_objects_frozen_by_the_interpreter_are_collected_when_it_ends(pipe):
    """gc.freeze() takes objects out of every collection, Py_EndInterpreter's included: the driver thaws them
    first, or ending leaks them (the runtime freezes what its start-up imported)."""
    r, w = pipe
    code = (
        'import gc, os\n'
        'class Cycle:\n'
        f'    def __del__(self, write=os.write):\n'
        f"        write({w}, b'x')\n"
        'c = Cycle()\n'
        'c.me = c\n'
        'del c\n'
        'gc.freeze()\n'
    )
    handle = driver.spawn(code)
    assert handle.join(10) and handle.outcome.ok
    assert select.select([r], [], [], 0)[0] == [r], 'the frozen cycle was never collected'


def test_shutdown_interrupts_joins_and_returns_the_stuck(pipe):
    r, w = pipe
    busy_r, busy_w = os.pipe()
    try:
        busy = driver.spawn(SPIN.format(w=busy_w), name='busy')
        # The interrupt may land anywhere after the "got here" write (before the blocking call, or just after it
        # returns): everything from the write on is inside the try, so it stays stuck in C until `r` is readable
        # (select does not consume the byte, so a retry returns at once).
        stuck = driver.spawn(
            'import os, select\nsignalled = False\nwhile True:\n    try:\n'
            f"        if not signalled:\n            os.write({busy_w}, b'x')\n            signalled = True\n"
            f'        select.select([{r}], [], [])\n        break\n'
            '    except KeyboardInterrupt:\n        pass\n',
            name='stuck',
        )
        _receive(busy_r)
        _receive(busy_r)
        [entry] = driver.shutdown(0.2)
        assert (entry['name'], entry['state']) == ('stuck', 'abandoned')
        assert busy.outcome.exc_type == 'KeyboardInterrupt'
        os.write(w, b'x')
        assert stuck.join(10)
        assert busy.join(0)
    finally:
        os.close(busy_r)
        os.close(busy_w)


def test_interrupt_after_fires_while_the_main_thread_is_busy_in_python(pipe):
    r, w = pipe
    handle = driver.spawn(SPIN.format(w=w))
    _receive(r)
    timer = driver.interrupt_after(handle, 0.05)
    deadline = time.monotonic() + 10
    while handle.outcome is None and time.monotonic() < deadline:
        pass  # hold the GIL in Python: no event loop, no blocking call
    assert timer.fired
    assert timer.cancel() is False
    assert handle.join(5)
    assert handle.outcome.exc_type == 'KeyboardInterrupt'


def test_cancelled_interrupt_after_never_fires(pipe):
    r, w = pipe
    handle = driver.spawn(f'import os\nos.read({r}, 1)\n')
    timer = driver.interrupt_after(handle, 60, 'SystemExit')
    assert timer.cancel() is True
    assert timer.cancel() is False
    assert not timer.fired
    os.write(w, b'x')
    assert handle.join(10)
    assert handle.outcome.ok


def test_watchdog_dump_names_the_spinning_function(pipe, tmp_path):
    r, w = pipe
    path = tmp_path / 'hang.txt'
    handle = driver.spawn(SPIN.format(w=w), name='spinner')
    _receive(r)
    assert driver.disarm_watchdog(driver.arm_watchdog(60, path)) is True
    watchdog = driver.arm_watchdog(0.05, path)
    deadline = time.monotonic() + 10
    text = ''
    while 'interpreter 0 (main)' not in text and time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ''  # the main thread stays busy in Python
    handle.interrupt()
    assert handle.join(5)
    assert 'in spin_here' in text, text
    assert f"interpreter {handle.id} 'spinner' (driver: running" in text, text
    assert 'in test_watchdog_dump_names_the_spinning_function' in text, 'the main thread, busy in Python'
    assert driver.disarm_watchdog(watchdog) is False


def test_dump_stacks_covers_every_interpreter(pipe, tmp_path):
    r, w = pipe
    handle = driver.spawn(SPIN.format(w=w), name='spinner')
    _receive(r)
    driver.dump_stacks(tmp_path / 'dump.txt')
    handle.interrupt()
    assert handle.join(5)
    text = (tmp_path / 'dump.txt').read_text()
    assert 'most recent call last' in text
    assert "'spinner': running" in text, 'the driver view'
    main_part = text[text.index('interpreter 0 (main)') :]
    assert 'in test_dump_stacks_covers_every_interpreter' in main_part
    assert 'in spin_here' in text
    with pytest.raises(OSError, match='cannot open'):
        driver.dump_stacks(tmp_path / 'missing' / 'dump.txt')


def test_the_shelf_lends_a_handle_and_its_fd_to_whoever_takes_it(pipe):
    r, w = pipe
    handle = driver.spawn(f'import os\nos.read({r}, 1)\n', name='lent')
    control_r, control_w = os.pipe()
    taken_fd = native.shelf_taken_fd()
    assert native.shelf_count() == 0 and native.shelf_take() is None
    native.shelf_put(handle, control_r, [control_w])
    assert native.shelf_count() == 1
    [(on_shelf, fd_on_shelf, held)] = native.shelf_items()
    assert (on_shelf.id, fd_on_shelf, held) == (handle.id, control_r, [control_w])
    taken, fd, held = native.shelf_take()
    assert (taken.id, fd, held) == (handle.id, control_r, [control_w])
    assert native.shelf_count() == 0 and native.shelf_in_flight() == 1
    assert select.select([taken_fd], [], [], 0)[0] == [taken_fd]  # the lender is woken
    os.read(taken_fd, 8)
    native.shelf_done()
    assert native.shelf_in_flight() == 0 and select.select([taken_fd], [], [], 0)[0] == [taken_fd]
    os.read(taken_fd, 8)
    assert [e['parent_id'] for e in driver.live() if e['id'] == handle.id] == [
        driver.current_interpreter_id()
    ]
    native.shelf_put(handle, control_r, [])
    me = driver.current_interpreter_id()
    assert native.shelf_count(lender=me) == 1 and native.shelf_count(lender=me + 1000) == 0
    assert [item[1] for item in native.shelf_items(lender=me)] == [control_r]
    # Another interpreter's pool takes back only what it lent: not ours.
    other = driver.spawn(
        'from subactor import _native\n'
        'assert _native.shelf_take_all() == [] and _native.shelf_count() == 1\n'
        'assert _native.shelf_count(lender=_native.current_interpreter_id()) == 0\n'
    )
    assert other.join(30) and other.outcome.ok, other.outcome
    other.close()
    assert [item[1] for item in native.shelf_take_all()] == [control_r] and native.shelf_count() == 0
    with pytest.raises(ValueError, match='control_fd'):
        native.shelf_put(handle, -1, [])
    os.write(w, b'x')
    assert handle.join(10)
    handle.close()
    with pytest.raises(RuntimeError, match='closed'):
        native.shelf_put(handle, control_r, [])
    os.close(control_r)
    os.close(control_w)


@pytest.mark.parametrize('how', ['ends', 'abandoned'])
def test_a_taker_that_ends_or_is_abandoned_mid_spawn_no_longer_counts_in_flight(pipe, how):
    # A taker hard-killed between its take and its shelf_done(), or stuck in C, would otherwise hold the
    # lender's refill back for the rest of the process.
    r, w = pipe
    lent = driver.spawn(f'import os\nos.read({r}, 1)\n', name='lent')
    control_r, control_w = os.pipe()
    taken_fd = native.shelf_taken_fd()
    native.shelf_put(lent, control_r, [])
    hold_r, hold_w = os.pipe()
    with contextlib.suppress(BlockingIOError):
        os.read(taken_fd, 8)
    taker = driver.spawn(
        f'import os\nfrom subactor import _native\nassert _native.shelf_take() is not None\nos.read({hold_r}, 1)\n'
    )
    try:
        assert select.select([taken_fd], [], [], 30)[0] == [taken_fd], 'woken by the take'
        assert native.shelf_in_flight() == 1
        os.read(taken_fd, 8)
        if how == 'ends':
            os.write(hold_w, b'x')
            assert taker.join(30) and taker.outcome.ok, taker.outcome
        else:
            assert not taker.join(0.05)
            assert taker.abandon()
        assert native.shelf_in_flight() == 0
        assert select.select([taken_fd], [], [], 0)[0] == [taken_fd], 'the lender is woken'
        os.read(taken_fd, 8)
        native.shelf_done()  # a late done (an abandoned taker getting out after all) counts nothing
        assert native.shelf_in_flight() == 0
        os.read(taken_fd, 8)
    finally:
        os.write(hold_w, b'x')
        assert taker.join(30)
        taker.close()
        os.write(w, b'x')
        assert lent.join(30)
        lent.close()
        for fd in (control_r, control_w, hold_r, hold_w):
            os.close(fd)
