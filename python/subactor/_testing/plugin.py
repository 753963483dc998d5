# The pytest plugin: `--spawn-backend`, the `start_method` fixture, `actor_test`, and backend skip markers.
from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import pytest

from .._spawn._registry import available_spawn_methods, spawn_method_info

DEFAULT_BACKEND = 'trio'
# Default bound of an `actor_test`; override per test with `@actor_test(timeout=...)`.
DEFAULT_TEST_TIMEOUT = 30.0
_MARKER = 'skipon_spawn_backend'


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
    return request.config.getoption('spawn_backend', DEFAULT_BACKEND)


def actor_test(
    fn: Callable[..., Any] | None = None,
    *,
    timeout: float = DEFAULT_TEST_TIMEOUT,
    root: bool = True,
    **root_kwargs: Any,
) -> Any:
    """Run an async test under trio, bounded by `trio.fail_after(timeout)`, inside a root actor on the selected
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

        from .._root import open_root_actor

        method = kwargs['start_method'] if wants_method else kwargs.pop('start_method')

        async def main() -> None:
            with trio.fail_after(timeout):
                if not root:
                    await fn(*args, **kwargs)
                    return
                async with open_root_actor(start_method=method, **root_kwargs):
                    await fn(*args, **kwargs)

        trio.run(main)

    if not wants_method:
        params = [*sig.parameters.values(), inspect.Parameter('start_method', inspect.Parameter.KEYWORD_ONLY)]
        wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    return wrapper
