# subactor.devx: dump_on_hang sees every interpreter and fires while the main thread is busy; resource deltas.
import json
import math
import os
import select
import subprocess
import sys
import threading

import pytest
import trio

import subactor
from actors import hang
from subactor import devx
from subactor.testing import actor_test

FAST = {'cancel_timeout': 0.3, 'interrupt_join_timeout': 1.5}
# Bound on waiting for a fired watchdog's dump to reach the file (the watchdog itself fires after 0.05-0.2 s).
DUMP_WAIT = 10.0

SPIN = """
import os
def spin_forever_in_named_function():
    os.write({w}, b'x')
    while True:
        pass
spin_forever_in_named_function()
"""


def _driver():
    from subactor import _driver

    return _driver


@pytest.fixture
def spinner():
    """A bare subinterpreter (no actor runtime) spinning in `spin_forever_in_named_function`."""
    r, w = os.pipe()
    handle = _driver().spawn(SPIN.format(w=w), name='spinner')
    try:
        ready, _, _ = select.select([r], [], [], DUMP_WAIT)
        assert ready, 'the subinterpreter never started spinning'
        yield handle
    finally:
        handle.interrupt()
        assert handle.join(5)
        handle.close()
        os.close(r)
        os.close(w)


def spin_in_main_thread_until_dumped(dump):
    """Hold the GIL in pure Python (the watchdog must take it from us) until the dump is complete."""
    checks = 0
    while True:
        checks += 1
        if checks % 100_000 == 0 and devx.DUMP_END in dump.text():
            return
        if checks > 500_000_000:
            raise AssertionError('the watchdog never dumped')


def test_dump_names_every_interpreter_and_the_spinning_function(spinner, tmp_path):
    path = tmp_path / 'hang.txt'
    with devx.dump_on_hang(0.05, path=path) as dump:
        spin_in_main_thread_until_dumped(dump)
    assert dump.fired is True
    text = path.read_text()
    assert text.rstrip().endswith(devx.DUMP_END)
    assert f"interpreter {spinner.id} 'spinner' (driver: running" in text, text
    assert 'in spin_forever_in_named_function' in text, text
    main = text[text.index('interpreter 0 (main)') :]
    assert 'in spin_in_main_thread_until_dumped' in main, 'the main thread, spinning in Python with the GIL'
    assert '(the dumping thread)' in main, "the driver's own thread took the GIL to write it"


def test_disarmed_on_exit_writes_no_file(tmp_path):
    path = tmp_path / 'never.txt'
    with devx.dump_on_hang(3600, path=path) as dump:
        assert dump.fired is None
    assert dump.fired is False
    assert not path.exists()
    assert dump.disarm() is False, 'idempotent'
    assert dump.text() == ''


@pytest.mark.parametrize(
    ('seconds', 'error', 'match'),
    [
        (0, ValueError, 'finite and > 0'),
        (-1, ValueError, 'finite and > 0'),
        (math.inf, ValueError, 'finite and > 0'),
        (math.nan, ValueError, 'finite and > 0'),
        (True, TypeError, 'must be a number'),
        ('5', TypeError, 'must be a number'),
    ],
)
def test_dump_on_hang_rejects_bad_seconds(seconds, error, match, tmp_path):
    with pytest.raises(error, match=match), devx.dump_on_hang(seconds, path=tmp_path / 'x.txt'):
        pass


def test_dump_on_hang_rejects_unwritable_paths(tmp_path):
    with (
        pytest.raises(FileNotFoundError, match='no directory'),
        devx.dump_on_hang(1, path=tmp_path / 'no' / 'x'),
    ):
        pass
    with pytest.raises(ValueError, match='not a regular file'), devx.dump_on_hang(1, path=tmp_path):
        pass
    with pytest.raises(TypeError, match=r'str or os\.PathLike'), devx.dump_on_hang(1, path=3):
        pass


def test_public_names_are_exported_by_the_facade():
    assert subactor.dump_on_hang is devx.dump_on_hang
    assert subactor.track_resource_deltas is devx.track_resource_deltas
    assert subactor.resource_delta_fixture is devx.resource_delta_fixture


@pytest.mark.skipon_spawn_backend(
    'trio', 'mp_spawn', 'mp_forkserver', 'forkserver', reason='actors in this process: subint'
)
@actor_test(bounds=FAST)
async def test_dump_labels_a_hung_subint_actor_and_names_its_function(tmp_path):
    path = tmp_path / 'hang.txt'
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('hung_child', enable_modules=['actors.hang'])
        with devx.dump_on_hang(0.2, path=path) as dump:
            with pytest.raises((subactor.TransportClosed, subactor.ContextCancelled)):
                async with portal.open_context(hang.spin_after_started_in_named_function) as (_, first):
                    assert first == 'spinning'
                    with trio.fail_after(DUMP_WAIT):
                        # The driver's own thread writes the file: nothing to wait on but its contents.
                        while devx.DUMP_END not in dump.text():  # noqa: ASYNC110
                            await trio.sleep(0.01)
                    await an.cancel()
    assert dump.fired
    text = dump.text()
    sections = text.split('\ninterpreter ')[1:]  # [0] is the header and the driver's view
    child = [section for section in sections if "[actor 'hung_child']" in section.splitlines()[0]]
    assert child, text
    assert 'in spin_forever_in_named_function' in child[0], text
    assert "[actor 'root']" in text[text.index('interpreter 0 (main)') :]


# --- resource deltas ---------------------------------------------------------------------------------------


def test_track_resource_deltas_reports_a_leaked_thread():
    lines = []
    release = threading.Event()
    with devx.track_resource_deltas('thread block', writer=lines.append, settle=0) as delta:
        thread = threading.Thread(target=release.wait, name='leaky-thread')
        thread.start()
    try:
        assert delta.leaked
        # (other threads of the process may come and go meanwhile: assert on ours)
        assert delta.threads_added[thread.ident] == "'leaky-thread'"
        assert lines and lines[0].startswith('thread block: leaked'), lines
        assert "'leaky-thread'" in lines[0]
    finally:
        release.set()
        thread.join(5)


def test_track_resource_deltas_waits_for_an_ending_thread_within_settle():
    release = threading.Event()
    with devx.track_resource_deltas('ending', writer=None, settle=DUMP_WAIT) as delta:
        thread = threading.Thread(target=release.wait, name='ending-thread')
        thread.start()
        release.set()
    assert not delta.leaked, delta.describe()


def test_track_resource_deltas_reports_leaked_and_released_fds():
    lines = []
    closed_r, closed_w = os.pipe()
    with devx.track_resource_deltas('fd block', writer=lines.append, settle=0) as delta:
        r, w = os.pipe()
        os.close(closed_r)
        os.close(closed_w)
    try:
        assert {r, w} <= set(delta.fds_added)  # other threads of the process may open files meanwhile
        assert {closed_r, closed_w} <= set(delta.fds_removed)
        assert delta.fds_added[r].startswith('pipe:')
        assert '+' in lines[0] and 'fds:' in lines[0]
    finally:
        os.close(r)
        os.close(w)


def test_track_resource_deltas_reports_a_leaked_interpreter():
    r, w = os.pipe()
    with devx.track_resource_deltas('interp block', writer=None, settle=0) as delta:
        handle = _driver().spawn(f'import os\nos.read({r}, 1)\n', name='leaky-interp')
    try:
        assert delta.leaked
        assert any("'leaky-interp'" in value for value in delta.interpreters_added.values()), delta.describe()
    finally:
        os.write(w, b'x')
        assert handle.join(5)
        handle.close()
        os.close(r)
        os.close(w)


def test_track_resource_deltas_is_quiet_when_nothing_changes():
    lines = []
    with devx.track_resource_deltas('quiet', writer=lines.append) as delta:
        pass
    assert not delta.changed
    assert lines == []
    with pytest.raises(ValueError, match='settle'), devx.track_resource_deltas('x', settle=-1):
        pass


# --- dumps on request from outside the process ---------------------------------------------------------------

SERVING_PROCESS = """
import os
from subactor import devx

def spin_in_served_process():
    os.write(1, (str(devx.serve_dumps()) + '\\n').encode())
    while True:
        pass

spin_in_served_process()
"""


def test_dump_command_reads_the_stacks_of_a_running_process(tmp_path):
    env = {**os.environ, 'SUBACTOR_DUMP_SOCKET_DIR': str(tmp_path)}
    env['PYTHONPATH'] = os.pathsep.join(
        p for p in (os.path.dirname(os.path.dirname(subactor.__file__)), env.get('PYTHONPATH')) if p
    )
    proc = subprocess.Popen([sys.executable, '-c', SERVING_PROCESS], stdout=subprocess.PIPE, env=env)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], DUMP_WAIT)
        assert ready, 'the process never started serving'
        sock = proc.stdout.readline().decode().strip()
        assert sock == str(tmp_path / f'dump-{proc.pid}.sock')
        assert os.stat(sock).st_mode & 0o777 == 0o600
        command = [sys.executable, '-m', 'subactor.devx', 'dump', str(proc.pid)]
        out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=DUMP_WAIT * 3)
        assert out.returncode == 0, out.stderr
        assert 'stack dump on request' in out.stdout
        assert 'interpreter 0 (main)' in out.stdout
        assert 'in spin_in_served_process' in out.stdout, 'the main thread spins in Python with the GIL'
        assert out.stdout.rstrip().endswith(devx.DUMP_END)
    finally:
        proc.kill()
        proc.wait(DUMP_WAIT)
        proc.stdout.close()
    # Killed: its socket is stale, and the command says so.
    out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=DUMP_WAIT * 3)
    assert out.returncode == 1
    assert f'process {proc.pid} does not serve dumps' in out.stderr


def test_serve_dumps_in_this_process_is_idempotent_and_stops(tmp_path, monkeypatch):
    monkeypatch.setenv('SUBACTOR_DUMP_SOCKET_DIR', str(tmp_path))
    path = devx.serve_dumps()
    try:
        assert devx.serve_dumps() == path
        text = devx.read_dump(os.getpid(), timeout=DUMP_WAIT)
        # read_dump waits in recv (GIL released) while the driver's thread writes this very thread's stack.
        assert 'in read_dump' in text, text
        assert text.rstrip().endswith(devx.DUMP_END)
    finally:
        devx.stop_serving_dumps()
    assert not path.exists()
    with pytest.raises(LookupError, match='does not serve dumps'):
        devx.read_dump(os.getpid(), timeout=DUMP_WAIT)


SERVING_TREE = """
import os
import sys
import trio
import subactor
from subactor import devx

sys.path.insert(0, {tests!r})
from actors import hang


async def main():
    async with subactor.open_nursery(start_method={method!r}) as an:
        portal = await an.start_actor('hung_child', enable_modules=['actors.hang'])
        async with portal.open_context(hang.park_after_started_in_named_function) as (_, first):
            os.write(1, (str(devx.serve_dumps()) + '\\n').encode())
            await trio.sleep_forever()

if __name__ == '__main__':
    trio.run(main)
"""


def test_dump_command_reads_a_whole_running_tree(tmp_path, start_method):
    """`python -m subactor.devx dump PID` from outside: the root's tasks and its child's (a process child answers
    through its own socket), the text and the JSON form."""
    env = {**os.environ, 'SUBACTOR_DUMP_SOCKET_DIR': str(tmp_path)}
    env['PYTHONPATH'] = os.pathsep.join(
        p for p in (os.path.dirname(os.path.dirname(subactor.__file__)), env.get('PYTHONPATH')) if p
    )
    script = tmp_path / 'tree.py'
    script.write_text(SERVING_TREE.format(tests=os.path.dirname(__file__), method=start_method))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, env=env)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], DUMP_WAIT * 3)
        assert ready, 'the tree never started serving'
        command = [sys.executable, '-m', 'subactor.devx', 'dump', str(proc.pid)]
        out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=DUMP_WAIT * 3)
        assert out.returncode == 0, out.stderr
        assert f"    'hung_child' [{start_method}]" in out.stdout, out.stdout
        child = out.stdout[out.stdout.index("--- actor 'hung_child'") :]
        assert 'in sleep_forever_in_named_function' in child, out.stdout
        assert out.stdout.rstrip().endswith(devx.DUMP_END)
        out = subprocess.run(
            [*command, '--json'], capture_output=True, text=True, env=env, timeout=DUMP_WAIT * 3
        )
        assert out.returncode == 0, out.stderr
        record = json.loads(out.stdout)
        assert record['pid'] == proc.pid and record['format'] == 'subactor-hang-dump/1'
    finally:
        proc.kill()
        proc.wait(DUMP_WAIT)
        proc.stdout.close()
