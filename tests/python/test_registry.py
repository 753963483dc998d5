# The spawn-method registry: keys, availability and refusals (including from a real older Python).
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import subactor
from subactor._spawn import _registry

PYTHON_DIR = str(Path(subactor.__file__).resolve().parent.parent)
EXPECTED_KEYS = {'trio', 'subint', 'mp_spawn', 'mp_forkserver', 'forkserver', 'subint_fork'}


def test_every_key_is_registered_with_availability():
    methods = subactor.available_spawn_methods()
    assert set(methods) == EXPECTED_KEYS
    for key, info in methods.items():
        assert info.key == key
        assert info.available == (info.reason is None)
    assert methods['trio'].available


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ValueError, match="unknown spawn method 'nope'") as err:
        subactor.try_set_start_method('nope')
    for key in EXPECTED_KEYS:
        assert key in str(err.value)


def test_subint_fork_is_always_refused_and_points_to_the_analysis():
    with pytest.raises(subactor.SpawnMethodUnavailable, match='not main interpreter') as err:
        subactor.try_set_start_method('subint_fork')
    assert 'conc-anal/fork-and-subinterpreters.md' in str(err.value)
    assert isinstance(err.value, RuntimeError)


def test_try_set_start_method_changes_the_default():
    before = _registry.current_default()
    try:
        info = subactor.try_set_start_method('mp_spawn')
        assert info.key == 'mp_spawn' and _registry.current_default() == 'mp_spawn'
    finally:
        subactor.try_set_start_method(before)


def test_missing_native_extension_is_refused_with_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, 'subactor._native', None)
    monkeypatch.delattr(subactor, '_native', raising=False)
    info = subactor.available_spawn_methods()['subint']
    assert not info.available
    assert 'pip install --no-build-isolation' in info.reason
    assert sys.version.split()[0] in info.reason
    with pytest.raises(subactor.SpawnMethodUnavailable, match="spawn method 'subint' is unavailable"):
        subactor.try_set_start_method('subint')


OLD_PYTHON_PROBE = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {path!r})
    import subactor
    info = subactor.available_spawn_methods()['subint']
    print('available', info.available)
    print('reason', info.reason)
    try:
        subactor.try_set_start_method('subint')
    except subactor.SpawnMethodUnavailable as exc:
        print('refused', type(exc).__name__, isinstance(exc, RuntimeError))
    """
)


@pytest.mark.parametrize('version', ['3.13'])
def test_older_python_imports_the_package_and_gets_a_clear_refusal(version):
    exe = shutil.which(f'python{version}')
    if exe is None:
        pytest.skip(f'python{version} is not installed here (the CI toolchain root installs 3.13)')
    out = subprocess.run(
        [exe, '-c', OLD_PYTHON_PROBE.format(path=PYTHON_DIR)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert 'available False' in out.stdout
    assert f'this is CPython {version}' in out.stdout
    assert 'needs CPython >= 3.14' in out.stdout
    assert 'refused SpawnMethodUnavailable True' in out.stdout
