# The native driver inside subinterpreters: its multiple-interpreter declaration and nested spawns.
import os
import select
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
