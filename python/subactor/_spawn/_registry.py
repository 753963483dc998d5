# The spawn-method registry: every backend by key, whether it can run here (and why not), and the default.
#
# Importable on any Python 3.12+ without msgspec, trio or the native extension: availability checks import their
# backend lazily, so a user on an unsupported Python gets a clear refusal instead of a deep ImportError.
from __future__ import annotations

import dataclasses
import os
import platform
import signal
import sys
from collections.abc import Callable

from .._errors import SpawnMethodUnavailable

DEFAULT_METHOD = 'trio'


@dataclasses.dataclass(frozen=True)
class SpawnMethodInfo:
    """One registered spawn method: `available` says whether it can run here; `reason` says why not."""

    key: str
    available: bool
    reason: str | None
    description: str


def python_identity() -> str:
    impl = platform.python_implementation()
    build = 'free-threaded' if not getattr(sys, '_is_gil_enabled', lambda: True)() else 'GIL'
    return f'{impl} {platform.python_version()} ({build} build, {sys.executable})'


def _check_trio() -> str | None:
    return None


def _check_mp(method: str) -> Callable[[], str | None]:
    def check() -> str | None:
        import multiprocessing

        start = method.removeprefix('mp_')
        if start not in multiprocessing.get_all_start_methods():
            return f'multiprocessing start method {start!r} is not supported on {sys.platform}'
        return None

    return check


def _check_subint() -> str | None:
    if platform.python_implementation() != 'CPython':
        return f'it needs CPython (subinterpreters are a CPython feature); this is {python_identity()}'
    if sys.version_info < (3, 14):
        return (
            f'it needs CPython >= 3.14, this is {python_identity()}: on 3.13 and older a subinterpreter '
            'running trio wedges (its thread-state hand-off deadlocks in imports and at interpreter end), '
            'so this backend refuses them'
        )
    try:
        from .. import _native  # noqa: F401
    except ImportError as exc:
        return (
            f'its native extension subactor._native does not load on {python_identity()} ({exc}); rebuild it '
            f"for this Python with '{sys.executable} -m pip install --no-build-isolation --force-reinstall .' "
            "(or 'tools/dev.sh build' in a checkout)"
        )
    return None


def _check_forkserver() -> str | None:
    if not sys.platform.startswith('linux'):
        return f'it needs Linux (pidfds, SCM_RIGHTS over SOCK_SEQPACKET sockets), this is {sys.platform}'
    if not hasattr(signal, 'pidfd_send_signal') or not hasattr(os, 'pidfd_open'):
        return f'it needs os.pidfd_open and signal.pidfd_send_signal (Python >= 3.9 on Linux >= 5.3): {python_identity()}'
    return None


def _check_subint_fork() -> str | None:
    return (
        'forking from a subinterpreter is not possible: CPython kills the forked child at once '
        '("Fatal Python error: _PyInterpreterState_DeleteExceptMain: not main interpreter"), and forking the '
        'main interpreter while subinterpreters exist crashes the child (gh-139759); use subint, '
        'mp_forkserver or trio instead (see conc-anal/fork-and-subinterpreters.md)'
    )


_CHECKS: dict[str, tuple[Callable[[], str | None], str]] = {
    'trio': (_check_trio, 'each actor is a fresh `python -m subactor._child` subprocess'),
    'mp_spawn': (_check_mp('mp_spawn'), "each actor is a multiprocessing 'spawn' process"),
    'mp_forkserver': (
        _check_mp('mp_forkserver'),
        "each actor is forked by multiprocessing's fork server (itself started by fork+exec)",
    ),
    'forkserver': (
        _check_forkserver,
        "each actor is forked by subactor's own fork server (started by fork+exec, runtime preloaded)",
    ),
    'subint': (
        _check_subint,
        'each actor is a legacy-config subinterpreter on its own OS thread (native driver)',
    ),
    'subint_fork': (_check_subint_fork, 'fork a process from a subinterpreter (always refused)'),
}

_default: str = DEFAULT_METHOD

# Registered only to say why they can never run (the demo and other choosers leave them out).
ALWAYS_REFUSED = frozenset({'subint_fork'})


def register(key: str, check: Callable[[], str | None], description: str) -> None:
    _CHECKS[key] = (check, description)


def spawn_method_info(key: str) -> SpawnMethodInfo:
    if key not in _CHECKS:
        raise ValueError(f'unknown spawn method {key!r}; valid keys: {", ".join(sorted(_CHECKS))}')
    check, description = _CHECKS[key]
    reason = check()
    return SpawnMethodInfo(key, reason is None, reason, description)


def available_spawn_methods() -> dict[str, SpawnMethodInfo]:
    """Every registered spawn method by key, with whether it can run on this Python and why not."""
    return {key: spawn_method_info(key) for key in _CHECKS}


def resolve_start_method(key: str | None) -> str:
    """Validate `key` (None: the current default) and return it; raises ValueError or SpawnMethodUnavailable."""
    key = _default if key is None else key
    if not isinstance(key, str):
        raise ValueError(f'spawn method must be a string key, not {key!r}')
    info = spawn_method_info(key)
    if not info.available:
        raise SpawnMethodUnavailable(f'spawn method {key!r} is unavailable: {info.reason}')
    return key


def try_set_start_method(key: str) -> SpawnMethodInfo:
    """Make `key` the default spawn method for nurseries that do not name one."""
    global _default
    resolve_start_method(key)
    _default = key
    return spawn_method_info(key)


def current_default() -> str:
    return _default
