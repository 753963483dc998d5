# Broadcast streams (stream.subscribe()): every subscriber sees every message from when it subscribed, the slowest
# plain subscriber bounds the producer, a max_lag subscriber gets Lagged instead, subscribers come and go, closing
# the stream or its end ends them all. The core runs over a local fake stream (one trio loop, so
# wait_all_tasks_blocked makes each step exact); the rest over real actors on the selected backend.
import math

import pytest
import trio
import trio.testing

import subactor
from actors import streaming
from subactor._broadcast import Broadcast
from subactor.testing import actor_test


class FakeStream:
    """What Broadcast needs of a MsgStream: `_receive()`, here from a memory channel; counts what was sent."""

    def __init__(self, buffer=0):
        self.tx, self.rx = trio.open_memory_channel(buffer)
        self.sent = 0

    def __repr__(self):
        return '<FakeStream>'

    async def _receive(self):
        return await self.rx.receive()

    async def produce(self, values):
        async with self.tx:
            for value in values:
                await self.tx.send(value)
                self.sent += 1


def run(fn):
    async def bounded():
        with trio.fail_after(10):
            await fn()

    trio.run(bounded)


async def collect(sub, into):
    async with sub:
        async for value in sub:
            into.append(value)


def test_each_subscriber_sees_every_message_from_when_it_subscribed():
    async def main():
        stream = FakeStream(math.inf)
        bc = Broadcast(stream, limit=100)
        await stream.produce(range(10))
        a = bc.subscribe(None)
        first = [await a.receive() for _ in range(3)]
        b = bc.subscribe(None)  # messages 0..2 were read before it subscribed
        late, rest = [], []
        async with trio.open_nursery() as n:
            n.start_soon(collect, b, late)
            n.start_soon(collect, a, rest)
        assert first + rest == list(range(10))
        assert late == list(range(3, 10))
        assert bc.subs == []

    run(main)


def test_the_slowest_plain_subscriber_bounds_the_producer():
    async def main():
        stream = FakeStream(0)  # an unbuffered producer: it sends only as fast as the subscribers pull
        bc = Broadcast(stream, limit=4)
        fast, slow = bc.subscribe(None), bc.subscribe(None)
        got, slow_got = [], []
        async with trio.open_nursery() as n:
            n.start_soon(stream.produce, range(20))
            n.start_soon(collect, fast, got)
            await trio.testing.wait_all_tasks_blocked()
            assert (got, stream.sent, slow.pending) == ([0, 1, 2, 3], 4, 4), 'held back by the slow one'
            slow_got.append(await slow.receive())
            await trio.testing.wait_all_tasks_blocked()
            assert (len(got), stream.sent, slow.pending) == (5, 5, 4), 'one more once the slow one read one'
            n.start_soon(collect, slow, slow_got)
        assert got == slow_got == list(range(20))

    run(main)


def test_a_subscriber_leaving_stops_holding_the_others_back():
    async def main():
        stream = FakeStream(0)
        bc = Broadcast(stream, limit=2)
        fast, slow = bc.subscribe(None), bc.subscribe(None)
        got = []
        async with trio.open_nursery() as n:
            n.start_soon(stream.produce, range(10))
            n.start_soon(collect, fast, got)
            await trio.testing.wait_all_tasks_blocked()
            assert got == [0, 1]
            await slow.aclose()
            with pytest.raises(trio.ClosedResourceError):
                await slow.receive()
        assert got == list(range(10))
        assert len(bc._buf) == 0, 'nothing kept for nobody'

    run(main)


def test_a_max_lag_subscriber_gets_lagged_instead_of_stalling_everyone():
    async def main():
        stream = FakeStream(0)
        bc = Broadcast(stream, limit=4)
        fast, lagger = bc.subscribe(None), bc.subscribe(3)
        got = []
        async with trio.open_nursery() as n:
            n.start_soon(stream.produce, range(10))
            n.start_soon(collect, fast, got)
        assert got == list(range(10)), 'the lagging subscriber held nobody back'
        assert len(bc._buf) == 3, 'only the last max_lag messages are kept for it'
        with pytest.raises(subactor.Lagged, match='missed 7') as err:
            await lagger.receive()
        assert err.value.missed == 7
        assert [await lagger.receive() for _ in range(3)] == [7, 8, 9]
        with pytest.raises(trio.EndOfChannel):
            await lagger.receive()

    run(main)


def test_closing_the_stream_ends_every_subscriber_after_what_it_has_yet_to_see():
    async def main():
        stream = FakeStream(0)
        bc = Broadcast(stream, limit=10)
        a, b, c = (bc.subscribe(None) for _ in range(3))
        got = {'a': [], 'b': [], 'c': []}
        async with trio.open_nursery() as n:
            n.start_soon(stream.produce, [1])  # one message, then the producer stays open (nothing closes tx)
            stream.tx = stream.tx.clone()  # keep the channel open after produce() returns
            n.start_soon(collect, a, got['a'])
            n.start_soon(collect, b, got['b'])
            await trio.testing.wait_all_tasks_blocked()
            assert got['a'] == got['b'] == [1] and c.pending == 1  # a and b wait: one pulling, one parked
            bc.close()
        assert got['a'] == got['b'] == [1]
        assert await c.receive() == 1, 'what it had yet to see first'
        with pytest.raises(trio.EndOfChannel):
            await c.receive()

    run(main)


def test_a_failing_stream_raises_once_and_breaks_the_others():
    async def main():
        bc = Broadcast(FakeStream(), limit=10)
        failure = ValueError('stream broke')

        async def broken():
            await trio.lowlevel.checkpoint()
            raise failure

        bc.stream._receive = broken
        a, b = bc.subscribe(None), bc.subscribe(None)
        with pytest.raises(ValueError, match='stream broke') as err:
            await a.receive()
        assert err.value is failure
        with pytest.raises(trio.BrokenResourceError, match='failed in another subscriber') as err2:
            await b.receive()
        assert err2.value.__cause__ is failure

    run(main)


def test_a_cancelled_puller_loses_no_message():
    async def main():
        stream = FakeStream(0)
        bc = Broadcast(stream, limit=10)
        a, b = bc.subscribe(None), bc.subscribe(None)
        async with trio.open_nursery() as n:
            n.start_soon(a.receive)  # a pulls, b waits for it
            n.start_soon(b.receive)
            await trio.testing.wait_all_tasks_blocked()
            assert bc._pulling
            n.cancel_scope.cancel()
        assert not bc._pulling and bc.pulled == 0
        async with trio.open_nursery() as n:
            n.start_soon(stream.produce, ['only'])
            assert await b.receive() == 'only', 'b pulls now'
        assert await a.receive() == 'only'

    run(main)


def test_subscribing_after_the_end_gives_end_of_channel():
    async def main():
        stream = FakeStream(math.inf)
        bc = Broadcast(stream, limit=10)
        await stream.produce([1])
        a = bc.subscribe(None)
        assert [v async for v in a] == [1]
        late = bc.subscribe(None)
        with pytest.raises(trio.EndOfChannel):
            await late.receive()

    run(main)


# -- over real actors --------------------------------------------------------------------------------------------


@actor_test
async def test_subscribers_share_a_remote_stream_and_direct_receive_is_refused():
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('broadcaster', enable_modules=['actors.streaming'])
        async with portal.open_context(streaming.count_up, n=50) as (ctx, _), ctx.open_stream() as stream:
            with pytest.raises(ValueError, match='max_lag must be'):
                stream.subscribe(max_lag=0)
            subs = [stream.subscribe() for _ in range(3)]
            with pytest.raises(RuntimeError, match='3 open subscription'):
                await stream.receive()
            results = [[] for _ in subs]
            async with trio.open_nursery() as n:
                for sub, out in zip(subs, results, strict=True):
                    n.start_soon(collect, sub, out)
            assert results == [list(range(50))] * 3
        assert await ctx.wait_for_result() == 50
        with pytest.raises(trio.ClosedResourceError):
            stream.subscribe()
        await portal.cancel_actor()


@actor_test
async def test_a_slow_subscriber_holds_the_remote_sender_back():
    window = 8
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('gated', enable_modules=['actors.streaming'])
        async with (
            portal.open_context(streaming.gated_sender, n=100) as (ctx, _),
            ctx.open_stream(msg_buffer_size=window) as stream,
        ):
            fast, slow = stream.subscribe(), stream.subscribe()
            got, slow_got = [], []
            await stream.send('go')
            async with trio.open_nursery() as n:
                for _ in range(window):
                    got.append(await fast.receive())
                n.start_soon(collect, fast, got)
                # The fast subscriber read `window` messages, then waits for the slow one: the sender stops once
                # that and the credit those reads returned are used up, instead of sending all 100.
                assert await portal.run(streaming.sent_count_when_stalled) == 2 * window
                await trio.testing.wait_all_tasks_blocked()
                assert len(got) == window and slow.pending == window
                n.start_soon(collect, slow, slow_got)
            assert got == slow_got == list(range(100))
        await portal.cancel_actor()


@actor_test
async def test_a_lagging_subscriber_of_a_remote_stream_gets_lagged():
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('lagging', enable_modules=['actors.streaming'])
        async with (
            portal.open_context(streaming.count_up, n=100) as (ctx, _),
            ctx.open_stream(msg_buffer_size=8) as stream,
        ):
            fast, lagger = stream.subscribe(), stream.subscribe(max_lag=4)
            got = []
            await collect(fast, got)
            assert got == list(range(100))
            with pytest.raises(subactor.Lagged) as err:
                await lagger.receive()
            assert err.value.missed == 96
            assert [v async for v in lagger] == [96, 97, 98, 99]
        await portal.cancel_actor()


@actor_test
async def test_closing_the_stream_ends_its_waiting_subscribers():
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('closer', enable_modules=['actors.streaming'])
        # The remote task sends one message and keeps its stream open: only our side's close can end them.
        async with portal.open_context(streaming.stream_then_wait) as (ctx, _), ctx.open_stream() as stream:
            subs = [stream.subscribe() for _ in range(3)]
            assert await subs[0].receive() == 'first'
            ended = {}

            async def wait_for_the_end(i, sub):
                async with sub:
                    ended[i] = [v async for v in sub]

            async with trio.open_nursery() as n:
                for i, sub in enumerate(subs):
                    n.start_soon(wait_for_the_end, i, sub)
                await trio.testing.wait_all_tasks_blocked()
                assert ended == {}
                await stream.aclose()
            assert ended == {0: [], 1: ['first'], 2: ['first']}
            await ctx.cancel()
        await portal.cancel_actor()
