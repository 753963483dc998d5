# Errors a person can read: remote tracebacks in what is printed, unwrap(), the runtime's own types caught by
# class, no import chosen by a peer, one error once, a clear refusal under asyncio, log levels checked up front.
import asyncio
import sys
import traceback

import pytest

import subactor
from actors import basic, errors, nested
from subactor._errors import resolve_type
from subactor.testing import actor_test


@actor_test
async def test_printed_remote_error_shows_remote_traceback_and_relay_path():
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('relay', enable_modules=['actors.nested'])
        with pytest.raises(subactor.RemoteActorError) as info:
            await portal.run(nested.relay_error)
        printed = ''.join(traceback.format_exception(info.value))
        assert "raised in actor 'grandchild', relayed by 'relay'" in str(info.value)
        assert "remote traceback (actor 'grandchild', relayed by 'relay')" in printed
        assert 'in raise_value_error' in printed and 'ValueError: from the grandchild' in printed
        await portal.cancel_actor()


@actor_test
async def test_unwrap_gives_an_equivalent_of_the_original():
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('raiser', enable_modules=['actors.errors', 'actors.basic'])
        with pytest.raises(subactor.RemoteActorError) as info:
            await portal.run(errors.raise_rich)
        original = info.value.unwrap()
        assert type(original) is errors.RichError
        assert original.args == (7,) and original.detail == {'where': 'deep'}
        assert original.__cause__ is info.value
        with pytest.raises(subactor.RemoteActorError) as info:
            await portal.run(basic.raise_local_only)
        assert info.value.unwrap() is info.value  # its type exists only over there
        await portal.cancel_actor()


@actor_test
async def test_runtime_errors_arrive_as_their_own_class():
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('bare')  # actors.basic not enabled
        with pytest.raises(subactor.ModuleNotExposed) as info:
            await portal.run(basic.add, a=1, b=2)
        assert isinstance(info.value, subactor.RemoteActorError)
        assert info.value.boxed_type is subactor.ModuleNotExposed
        await portal.cancel_actor()


def test_resolve_type_never_imports_a_module_a_peer_names(tmp_path, monkeypatch):
    (tmp_path / 'peer_named_module.py').write_text('raise SystemExit("imported on a peer\'s word")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    assert resolve_type('peer_named_module.Boom') is None
    assert 'peer_named_module' not in sys.modules
    assert resolve_type('actors.errors.CustomError') is errors.CustomError  # imported here already


@actor_test
async def test_error_reraised_from_wait_for_result_is_raised_once():
    # Before: the nursery raised an exception group holding this very error twice.
    with pytest.raises(subactor.RemoteActorError) as info:
        async with subactor.open_nursery() as an:
            portal = await an.run_in_actor(basic.add, a=1, b=2, c=3)
            await portal.wait_for_result()
    assert info.value.boxed_type is TypeError and 'unexpected keyword argument' in info.value.message


def test_running_under_asyncio_says_to_use_trio():
    async def under_asyncio():
        async with subactor.open_nursery():
            pass

    with pytest.raises(RuntimeError, match=r'runs under trio.*called from asyncio.*trio\.run\(main\)'):
        asyncio.run(under_asyncio())


@actor_test
async def test_unknown_log_level_is_refused_before_spawning():
    async with subactor.open_nursery() as an:
        with pytest.raises(ValueError, match=r"unknown log level 'cancel'.*'debug'"):
            await an.start_actor('never', loglevel='cancel')
        assert an.children == {}
        portal = await an.start_actor('fine', loglevel='info', enable_modules=['actors.basic'])
        assert await portal.run(basic.add, a=1, b=2) == 3
        await portal.cancel_actor()


async def _root_with_level(level):
    async with subactor.open_root_actor(loglevel=level):
        pass


def test_unknown_log_level_is_refused_by_the_root():
    import trio

    with pytest.raises(ValueError, match="unknown log level 'devx'"):
        trio.run(_root_with_level, 'devx')
