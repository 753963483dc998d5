# Contexts: started values, results, remote failures, and acknowledged cancellation from either side.
import functools

import pytest
import trio

import subactor
from actors import streaming
from subactor._context import is_context_fn
from subactor.testing import actor_test


async def start_worker(an, name='ctx-worker'):
    return await an.start_actor(name, enable_modules=['actors.streaming'])


@actor_test
async def test_started_value_and_result():
    async with subactor.open_nursery() as an:
        portal = await start_worker(an)
        async with portal.open_context(streaming.echo_started, value=[1, 'two']) as (ctx, first):
            assert first == [1, 'two']
            assert ctx.side == 'caller'
            assert await ctx.wait_for_result() == {'returned': [1, 'two']}
        # Leaving the block waits for the result: it is still there afterwards.
        assert await ctx.wait_for_result() == {'returned': [1, 'two']}
        await portal.cancel_actor()


@actor_test
async def test_remote_failure_after_started_cancels_the_block_and_raises():
    async with subactor.open_nursery() as an:
        portal = await start_worker(an)
        reached_end = False
        with pytest.raises(subactor.RemoteActorError) as info:
            async with portal.open_context(streaming.fail_after_started) as (_ctx, first):
                assert first == 'up'
                await trio.sleep_forever()
            reached_end = True
        assert not reached_end
        assert info.value.boxed_type is ValueError
        assert info.value.message == 'failed after started'
        assert info.value.src_uid == portal.peer_uid
        await portal.cancel_actor()


@actor_test
async def test_remote_failure_before_started_raises_from_open_context():
    async with subactor.open_nursery() as an:
        portal = await start_worker(an)
        with pytest.raises(subactor.RemoteActorError) as info:
            async with portal.open_context(streaming.fail_before_started):
                pytest.fail('the block must not run')
        assert info.value.boxed_type is KeyError
        with pytest.raises(RuntimeError, match=r'without calling ctx\.started'):
            async with portal.open_context(streaming.return_without_started):
                pytest.fail('the block must not run')
        with pytest.raises(subactor.RemoteActorError, match='already called'):
            async with portal.open_context(streaming.started_twice) as (ctx, first):
                assert first == 1
                await ctx.wait_for_result()
        await portal.cancel_actor()


@actor_test
async def test_caller_cancel_is_acknowledged_without_error():
    async with subactor.open_nursery() as an:
        portal = await start_worker(an)
        async with portal.open_context(streaming.wait_to_be_cancelled) as (ctx, first):
            assert first == 'waiting'
            await ctx.cancel()
            assert ctx.cancel_called
            # The acknowledgement is not an error on the side that asked.
            assert await ctx.wait_for_result() is None
        # The callee saw the cancellation.
        assert await portal.run(streaming.last_outcome) == {'cancelled': True}
        await portal.cancel_actor()


@actor_test
async def test_callee_cancel_reaches_caller_as_context_cancelled():
    async with subactor.open_nursery() as an:
        portal = await start_worker(an)
        with pytest.raises(subactor.ContextCancelled) as info:
            async with portal.open_context(streaming.cancel_self) as (_ctx, first):
                assert first == 'cancelling myself'
                await trio.sleep_forever()
        assert info.value.canceller == portal.peer_uid
        assert info.value.src_uid == portal.peer_uid
        assert 'cancel_self' in info.value.message
        await portal.cancel_actor()


@actor_test
async def test_error_in_caller_block_cancels_the_remote_task():
    async with subactor.open_nursery() as an:
        portal = await start_worker(an)
        with pytest.raises(KeyError, match='caller failed'):
            async with portal.open_context(streaming.wait_to_be_cancelled):
                raise KeyError('caller failed')
        assert await portal.run(streaming.last_outcome) == {'cancelled': True}
        await portal.cancel_actor()


@actor_test
async def test_cancelling_the_caller_scope_cancels_the_remote_task():
    async with subactor.open_nursery() as an:
        portal = await start_worker(an)
        with trio.CancelScope() as scope:
            async with portal.open_context(streaming.wait_to_be_cancelled):
                scope.cancel()
                await trio.sleep_forever()
        assert scope.cancelled_caught
        assert await portal.run(streaming.last_outcome) == {'cancelled': True}
        await portal.cancel_actor()


@actor_test
async def test_cancel_actor_reports_the_canceller_to_open_contexts():
    async with subactor.open_nursery() as an:
        portal = await start_worker(an)
        root_uid = subactor.current_actor().uid
        with pytest.raises(subactor.ContextCancelled) as info:
            async with portal.open_context(streaming.wait_to_be_cancelled):
                # Cancelling the whole actor from here is not a cancel of this context: it is reported.
                async with trio.open_nursery() as n:
                    n.start_soon(portal.cancel_actor)
                    await trio.sleep_forever()
        assert info.value.canceller == root_uid


class _FakeChannel:
    peer_uid = ('callee', 'uid-1')
    closed = False


@actor_test(root=False)
async def test_failure_arriving_with_started_cancels_the_block_it_precedes():
    # Regression: the callee's Error can arrive right behind its Started, before the caller's block is entered;
    # arming the block's scope must notice it (it used to sleep forever).
    from subactor._context import Context
    from subactor._msg import Error, ErrorInfo, Started

    ctx = Context(_FakeChannel(), 'cid-1', side='caller', local_uid=('caller', 'uid-0'), fn_name='f')
    info = ErrorInfo('Cancelled', 'cancelled itself', '', list(_FakeChannel.peer_uid), [], None, True)
    ctx.deliver(Started('cid-1', 'first'))
    ctx.deliver(Error('cid-1', info))
    assert await ctx._wait_started() == 'first'
    scope = trio.CancelScope()
    ctx.arm_caller_scope(scope)
    assert scope.cancel_called
    # An acknowledgement of this side's own cancel is not a failure: the block is left alone.
    own = Context(_FakeChannel(), 'cid-2', side='caller', local_uid=('caller', 'uid-0'), fn_name='f')
    own.cancel_called = True
    own.deliver(Error('cid-2', ErrorInfo('Cancelled', 'acked', '', None, [], ['caller', 'uid-0'], True)))
    scope = trio.CancelScope()
    own.arm_caller_scope(scope)
    assert not scope.cancel_called


def test_context_decorator_checks_its_function():
    async def good(ctx, value=1):
        pass

    async def good_keyword_only(*, ctx):
        pass

    @functools.wraps(good)
    async def wrapped(*args, **kwargs):
        pass

    for fn in (good, good_keyword_only, wrapped):
        assert subactor.context(fn) is fn and is_context_fn(fn)

    async def no_ctx(value):
        pass

    async def ctx_not_first(value, ctx):
        pass

    async def only_varargs(*args):
        pass

    def not_async(ctx):
        pass

    for fn in (no_ctx, ctx_not_first, only_varargs):
        with pytest.raises(TypeError, match="must take 'ctx' as its first parameter"):
            subactor.context(fn)
    with pytest.raises(TypeError, match='needs an async function'):
        subactor.context(not_async)
