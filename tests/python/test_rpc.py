# Remote calls with portal.run: sync and async functions, values on the wire, and every way a call is refused.
import pytest
import trio
import trio.testing

import subactor
from actors import basic, streaming
from subactor.testing import actor_test


def module_level_helper():
    return 'not enabled in the child'


@actor_test
async def test_run_sync_async_and_values_round_trip():
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('rpc', enable_modules=['actors.basic'])
        assert await portal.run(basic.add, a=2, b=3) == 5
        assert await portal.run(basic.async_add, a=2, b=3) == 5
        value = {'bytes': b'\x00\xff', 'nested': [1, 2.5, None, True, {'k': 'v'}], 'big': 2**62, 'text': 'é'}
        assert await portal.run(basic.echo, value=value) == value
        # Tuples travel as lists, sets as lists.
        assert await portal.run(basic.echo, value=(1, 2)) == [1, 2]
        assert sorted(await portal.run(basic.echo, value={3, 1, 2})) == [1, 2, 3]
        await portal.cancel_actor()


@actor_test
async def test_plain_functions_are_served_by_the_dispatcher_and_awaitable_results_by_a_task():
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('inline', enable_modules=['actors.basic'])
        assert 'serve_channel' in await portal.run(basic.serving_task_name)
        assert '_run_rpc' in await portal.run(basic.async_serving_task_name)
        assert await portal.run(basic.returns_a_coroutine, a=4, b=5) == 9
        assert await portal.run(basic.set_a_context_var, value='first') == 'unset'
        assert await portal.run(basic.set_a_context_var, value='second') == 'unset', (
            'each call its own context'
        )
        await portal.cancel_actor()


@actor_test
async def test_replies_bigger_than_the_socket_takes_at_once_arrive_whole_and_in_between_others():
    # A reply the socket cannot take at once is finished by a task holding the channel's turn: other replies
    # (inline or not) wait for it and never interleave with it.
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('blobs', enable_modules=['actors.basic'])
        results = {}

        async def call(i):
            if i % 3 == 0:
                results[i] = await portal.run(basic.blob, size=3_000_000 + i, fill=i)
            elif i % 3 == 1:
                results[i] = await portal.run(basic.add, a=i, b=1)
            else:
                results[i] = await portal.run(basic.async_add, a=i, b=2)

        async with trio.open_nursery() as n:
            for i in range(12):
                n.start_soon(call, i)
        for i, value in results.items():
            expected = [bytes([i]) * (3_000_000 + i), i + 1, i + 2][i % 3]
            assert value == expected, i
        assert len(results) == 12
        await portal.cancel_actor()


@actor_test
async def test_concurrent_calls_on_one_portal():
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('busy', enable_modules=['actors.basic'])
        results = {}

        async def call(i):
            results[i] = await portal.run(basic.async_add, a=i, b=i)

        async with trio.open_nursery() as n:
            for i in range(50):
                n.start_soon(call, i)
        assert results == {i: 2 * i for i in range(50)}
        await portal.cancel_actor()


@actor_test
async def test_unknown_function_and_disabled_module_are_refused():
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('strict', enable_modules=['actors.basic'])
        with pytest.raises(subactor.RemoteActorError) as info:
            await portal.run_from_ns('actors.basic', 'no_such_function')
        assert info.value.boxed_type is subactor.ModuleNotExposed
        assert 'no_such_function' in info.value.message
        assert info.value.src_uid == portal.peer_uid

        with pytest.raises(subactor.RemoteActorError) as info:
            await portal.run(module_level_helper)
        assert info.value.boxed_type is subactor.ModuleNotExposed
        assert __name__ in info.value.message
        assert 'enable_modules' in info.value.message

        # Importable and enabled elsewhere is not enough: the module must be enabled in this actor.
        with pytest.raises(subactor.RemoteActorError) as info:
            await portal.run(streaming.last_outcome)
        assert info.value.boxed_type is subactor.ModuleNotExposed
        assert 'actors.streaming' in info.value.message
        assert await portal.run(basic.add, a=1, b=1) == 2
        await portal.cancel_actor()


@actor_test
async def test_lambdas_and_nested_functions_are_refused_locally():
    def nested():
        pass

    async with subactor.open_nursery() as an:
        portal = await an.start_actor('picky', enable_modules=['actors.basic'])
        with pytest.raises(ValueError, match='module-level'):
            await portal.run(lambda: 1)
        with pytest.raises(ValueError, match='module-level'):
            await portal.run(nested)
        with pytest.raises(ValueError, match='module-level'):
            await an.run_in_actor(nested)
        assert await portal.run(basic.add, a=1, b=2) == 3
        await portal.cancel_actor()


@actor_test
async def test_context_functions_and_plain_functions_are_not_interchangeable():
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('kinds', enable_modules=['actors.basic', 'actors.streaming'])
        with pytest.raises(TypeError, match='open_context'):
            await portal.run(streaming.echo_started, value=1)
        with pytest.raises(TypeError, match=r'not a @subactor\.context function'):
            async with portal.open_context(basic.add, a=1, b=2):
                pass
        # The callee refuses a mismatched request too (a caller bypassing the local checks).
        with pytest.raises(subactor.RemoteActorError) as info:
            await portal.run_from_ns('actors.streaming', 'echo_started', value=1)
        assert info.value.boxed_type is TypeError
        assert 'open_context' in info.value.message
        await portal.cancel_actor()


@actor_test
async def test_unencodable_argument_fails_in_sender_and_channel_stays_usable():
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('codec', enable_modules=['actors.basic'])
        with pytest.raises(subactor.MessageEncodeError, match='object'):
            await portal.run(basic.echo, value=object())
        with pytest.raises(TypeError, match='Lock'):
            await portal.run(basic.echo, value=trio.Lock())
        assert await portal.run(basic.add, a=1, b=2) == 3
        await portal.cancel_actor()


@actor_test
async def test_unencodable_return_value_raises_remote_encode_error():
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('bad-return', enable_modules=['actors.basic'])
        with pytest.raises(subactor.RemoteActorError) as info:
            await portal.run(basic.return_unencodable)
        assert info.value.boxed_type is subactor.MessageEncodeError
        assert 'object' in info.value.message
        assert await portal.run(basic.add, a=1, b=2) == 3
        await portal.cancel_actor()


@actor_test
async def test_cancelling_a_call_cancels_the_remote_task():
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('sleeper', enable_modules=['actors.basic', 'actors.streaming'])
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as n:
                n.start_soon(portal.run, basic.sleep_forever)
                await trio.testing.wait_all_tasks_blocked()
                scope.cancel()
        assert scope.cancelled_caught
        # The remote task is gone and the actor still serves.
        assert await portal.run(basic.add, a=1, b=2) == 3
        await portal.cancel_actor()
