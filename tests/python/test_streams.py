# Streams on contexts: both directions, ordering at volume, end of stream, back-pressure and overrun.
import pytest
import trio

import subactor
from actors import streaming
from subactor.testing import actor_test

N = 10_000


async def start_worker(an, name='streamer'):
    return await an.start_actor(name, enable_modules=['actors.streaming'])


@actor_test
async def test_10k_messages_each_direction_in_order():
    async with subactor.open_nursery() as an:
        portal = await start_worker(an)
        # Callee -> caller.
        async with portal.open_context(streaming.count_up, n=N) as (ctx, first):
            assert first == N
            async with ctx.open_stream() as stream:
                received = [value async for value in stream]
            assert await ctx.wait_for_result() == N
        assert received == list(range(N))
        # Caller -> callee.
        async with portal.open_context(streaming.sum_sink) as (ctx, _), ctx.open_stream() as stream:
            for i in range(N):
                await stream.send(i)
        assert await ctx.wait_for_result() == [N, N * (N - 1) // 2, True]
        await portal.cancel_actor()


@actor_test
async def test_bidirectional_echo_stream():
    async with subactor.open_nursery() as an:
        portal = await start_worker(an)
        async with portal.open_context(streaming.echo_stream) as (ctx, _), ctx.open_stream() as stream:
            for value in ['a', b'b', {'c': [1]}, None]:
                await stream.send(value)
                assert await stream.receive() == value
            # Pipelined: many sends in flight, echoed back in order.
            async with trio.open_nursery() as n:

                async def send_all():
                    for i in range(1000):
                        await stream.send(i)

                n.start_soon(send_all)
                assert [await stream.receive() for _ in range(1000)] == list(range(1000))
        assert await ctx.wait_for_result() == 'echo done'
        await portal.cancel_actor()


@actor_test
async def test_stream_ends_when_the_remote_task_returns():
    async with subactor.open_nursery() as an:
        portal = await start_worker(an)
        async with portal.open_context(streaming.count_up, n=3) as (ctx, _):
            async with ctx.open_stream() as stream:
                assert [await stream.receive() for _ in range(3)] == [0, 1, 2]
                with pytest.raises(trio.EndOfChannel):
                    await stream.receive()
                with pytest.raises(trio.EndOfChannel):
                    await stream.receive()
            with pytest.raises(RuntimeError, match='already has an open stream'):
                async with ctx.open_stream():
                    pass
        await portal.cancel_actor()


@actor_test
async def test_stream_misuse_is_refused():
    async with subactor.open_nursery() as an:
        portal = await start_worker(an)
        async with portal.open_context(streaming.echo_stream) as (ctx, _):
            with pytest.raises(ValueError, match='msg_buffer_size'):
                async with ctx.open_stream(msg_buffer_size=0):
                    pass
            async with ctx.open_stream() as stream:
                await stream.send(1)
                assert await stream.receive() == 1
            with pytest.raises(trio.ClosedResourceError):
                await stream.send(2)
        await portal.cancel_actor()


@actor_test
async def test_slow_receiver_makes_fast_sender_wait():
    window = 8
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('fast-sender', enable_modules=['actors.streaming'])
        async with (
            portal.open_context(streaming.gated_sender, n=100) as (ctx, _),
            ctx.open_stream(msg_buffer_size=window) as stream,
        ):
            await stream.send('go')
            # Nothing read yet: the sender stalls once the window is full.
            assert await portal.run(streaming.sent_count_when_stalled) == window
            received = [await stream.receive() for _ in range(100)]
        assert received == list(range(100))
        assert await ctx.wait_for_result() == 100
        await portal.cancel_actor()


@actor_test
async def test_a_cancelled_receive_loses_no_message():
    # With a window of 2 the receiver grants credit after every message it reads; a receive cancelled while that
    # credit is being sent must leave the message for the next receive.
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('fast-sender', enable_modules=['actors.streaming'])
        async with (
            portal.open_context(streaming.gated_sender, n=20) as (ctx, _),
            ctx.open_stream(msg_buffer_size=2) as stream,
        ):
            await stream.send('go')
            # The reply comes after the window's Yields on the same channel: both are buffered here now.
            assert await portal.run(streaming.sent_count_when_stalled) == 2
            with trio.CancelScope() as cs:
                cs.cancel()
                await stream.receive()
            assert cs.cancelled_caught
            received = [await stream.receive() for _ in range(20)]
        assert received == list(range(20))
        assert await ctx.wait_for_result() == 20
        await portal.cancel_actor()


@actor_test
async def test_overrun_without_backpressure_raises_stream_overrun():
    async with subactor.open_nursery() as an:
        portal = await start_worker(an)
        with pytest.raises(subactor.StreamOverrun, match='backpressure'):
            async with (
                portal.open_context(streaming.gated_sender, n=50, hold_open=True) as (ctx, _),
                ctx.open_stream(msg_buffer_size=4, backpressure=False) as stream,
            ):
                await stream.send('go')
                # Wait until the flood has arrived unread, then read.
                assert await portal.run(streaming.sent_count_when_stalled) == 50
                await stream.receive()
        # The channel survived: the actor still serves.
        assert await portal.run(streaming.last_outcome) is not None
        await portal.cancel_actor()
