# The native driver inside subinterpreters: its multiple-interpreter declaration and nested spawns.
import os
import select
import subprocess
import sys
import textwrap

import pytest

from subactor import _driver as driver

GRANDCHILD = textwrap.dedent(
    """
    import os
    from subactor import _native
    me = _native.current_interpreter_id()
    grandchild = _native.spawn('import sys; sys.exit(7)', name='grandchild')
    entry = [e for e in _native.live() if e['name'] == 'grandchild']
    assert grandchild.join(10)
    report = f'{me} {grandchild.outcome.exit_code} {entry[0]["parent_id"] if entry else me}'
    os.write({w}, report.encode())
    """
)


def _read_report(fd: int) -> list[int]:
    assert select.select([fd], [], [], 10)[0], 'no report from the child'
    return [int(x) for x in os.read(fd, 100).split()]


@pytest.fixture
def pipe():
    r, w = os.pipe()
    yield r, w
    os.close(r)
    os.close(w)


def test_driver_child_spawns_a_grandchild(pipe):
    r, w = pipe
    child = driver.spawn(GRANDCHILD.replace('{w}', str(w)), name='child')
    assert child.join(30), driver.live()
    assert child.outcome.ok, child.outcome.traceback
    me, code, parent = _read_report(r)
    assert me == child.id
    assert me != 0
    assert code == 7
    assert parent == child.id, 'the registry is process-wide and records who spawned whom'


def test_imports_and_spawns_in_a_legacy_concurrent_interpreter(pipe):
    _interpreters = pytest.importorskip('_interpreters')
    r, w = pipe
    interp = _interpreters.create('legacy')
    try:
        assert _interpreters.exec(interp, GRANDCHILD.replace('{w}', str(w))) is None
        me, code, parent = _read_report(r)
        assert me == parent == interp
        assert code == 7
    finally:
        _interpreters.destroy(interp)


def test_refuses_to_load_in_an_interpreter_with_its_own_gil():
    _interpreters = pytest.importorskip('_interpreters')
    interp = _interpreters.create('isolated')
    try:
        failure = _interpreters.exec(interp, 'from subactor import _native')
    finally:
        _interpreters.destroy(interp)
    assert failure is not None
    assert 'does not support loading in subinterpreters' in failure.msg


def test_running_interpreter_is_marked_running_and_cannot_be_destroyed(pipe):
    _interpreters = pytest.importorskip('_interpreters')
    r, w = pipe
    release_r, release_w = os.pipe()
    handle = driver.spawn(f"import os\nos.write({w}, b'x')\nos.read({release_r}, 1)\n")
    try:
        assert select.select([r], [], [], 10)[0]
        assert _interpreters.is_running(handle.id)
        with pytest.raises(_interpreters.InterpreterError, match='running'):
            _interpreters.destroy(handle.id)
    finally:
        os.write(release_w, b'x')
        assert handle.join(10)
        os.close(release_r)
        os.close(release_w)


# Item 2 of issue 13: pybind11 3.1 leaks its per-interpreter internals, and with them a pthread TSS key, when an
# interpreter ends; PTHREAD_KEYS_MAX is 1,024, so the 1,019th interpreter that imported the extension failed with
# "thread_specific_storage constructor: could not initialize the TSS key!". The driver now frees them on the
# worker thread once Py_EndInterpreter has returned (module.cpp, PrepareToFreeInternals). In a subprocess: without
# the fix it would use up this process's keys for good. Each child loads the extension directly (the package's
# import costs ~60 ms per interpreter and adds nothing here); every 50th also keeps pybind11 objects alive into
# its own finalization (a grandchild that imported the extension too, its handle, a Timer) so they are freed
# while Py_EndInterpreter runs, before the internals they need are.
MANY_INTERPRETERS = textwrap.dedent(
    """
    import sys
    from subactor import _native

    LOAD = '''
    import importlib.util
    spec = importlib.util.spec_from_file_location('subactor._native', {path!r})
    native = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(native)
    '''.format(path=_native.__file__)
    HOLD = LOAD + '''
    grandchild = native.spawn({load!r}, name='grandchild')
    assert grandchild.join(60)
    assert grandchild.outcome.ok, grandchild.outcome.traceback
    timer = native.interrupt_after(grandchild, 3600.0)
    kept = [grandchild, timer, native.live()]
    '''.format(load=LOAD)
    for i in range(int(sys.argv[1])):
        handle = _native.spawn(HOLD if i % 50 == 0 else LOAD, name=f'tss-{i}')
        if not handle.join(60):
            sys.exit(f'interpreter {i} did not finish within 60 s')
        if not handle.outcome.ok:
            sys.exit(f'interpreter {i}: {handle.outcome.traceback}')
        handle.close()
    # The main interpreter's own pybind11 state is untouched.
    assert _native.live_count() == 0 and _native.current_interpreter_id() == 0
    print('ok')
    """
)


@pytest.mark.slow
def test_two_thousand_interpreters_import_the_extension_in_one_process():
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env['PYTHONPATH'] = os.path.join(root, 'python') + os.pathsep + env.get('PYTHONPATH', '')
    proc = subprocess.run(
        [sys.executable, '-c', MANY_INTERPRETERS, '2000'],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout == 'ok\n'


@pytest.mark.parametrize(('env', 'expected'), [(None, 'True'), ('0', 'False'), ('1', 'True')])
def test_the_c_heap_is_trimmed_after_finalizations_unless_turned_off(env, expected):
    environ = dict(os.environ)
    environ.pop('SUBACTOR_TRIM_AFTER_FINALIZE', None)
    if env is not None:
        environ['SUBACTOR_TRIM_AFTER_FINALIZE'] = env
    code = (
        'from subactor import _driver, _native; print(_native.trim_after_finalize()); _driver.trim_memory()'
    )
    proc = subprocess.run(
        [sys.executable, '-c', code], capture_output=True, text=True, timeout=60, env=environ
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [expected]
