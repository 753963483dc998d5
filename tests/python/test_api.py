# The public surface: exported names, and the one clear error for runtime APIs used outside an actor.
import pytest

import subactor
from subactor.testing import actor_test


def test_exported_names_resolve():
    for name in subactor.__all__:
        assert getattr(subactor, name) is not None, name
    assert set(subactor.__all__) <= set(dir(subactor))
    with pytest.raises(AttributeError, match='no_such_name'):
        _ = subactor.no_such_name


def test_error_hierarchy():
    assert issubclass(subactor.ContextCancelled, subactor.RemoteActorError)
    for name in (
        'RemoteActorError',
        'ActorFailure',
        'ModuleNotExposed',
        'TransportClosed',
        'StreamOverrun',
        'MessageEncodeError',
        'NoRuntime',
        'ProtocolError',
    ):
        assert issubclass(getattr(subactor, name), subactor.SubactorError), name
    # Catchable as the builtin they refine.
    assert issubclass(subactor.ModuleNotExposed, ModuleNotFoundError)
    assert issubclass(subactor.TransportClosed, ConnectionError)
    assert issubclass(subactor.MessageEncodeError, TypeError)


@actor_test(root=False)
async def test_runtime_apis_outside_an_actor_raise_no_runtime():
    with pytest.raises(subactor.NoRuntime, match='open_root_actor'):
        subactor.current_actor()
    with pytest.raises(subactor.NoRuntime):
        async with subactor.find_actor('anyone'):
            pass
    with pytest.raises(subactor.NoRuntime):
        async with subactor.wait_for_actor('anyone'):
            pass
    with pytest.raises(subactor.NoRuntime):
        async with subactor.get_registry():
            pass


def test_context_decorator_checks_its_function():
    def not_async(ctx):
        pass

    async def no_ctx(x):
        pass

    with pytest.raises(TypeError, match='async function'):
        subactor.context(not_async)
    with pytest.raises(TypeError, match="'ctx'"):
        subactor.context(no_ctx)


@actor_test(root=False)
async def test_actor_test_rejects_sync_functions():
    from subactor.testing import actor_test as decorate

    def sync_test():
        pass

    with pytest.raises(TypeError, match='async test function'):
        decorate(sync_test)
