# Cancel requests are acknowledged at once: an unresponsive child is escalated without waiting out every bound,
# a busy but healthy one gets its full grace, and one caller's budget for a child is shared, not summed.
import pytest
import trio

import subactor
from actors import signalling
from subactor.testing import actor_test


async def call_and_cancel_once_running(portal, fn, **kwargs):
    """Call `fn(port=..., **kwargs)` and cancel the call once the remote function signalled it runs."""
    listeners = await trio.open_tcp_listeners(0, host='127.0.0.1')
    async with listeners[0] as listener:
        port = listener.socket.getsockname()[1]
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as n:
                n.start_soon(lambda: portal.run(fn, port=port, **kwargs))
                async with await listener.accept() as stream:
                    assert await stream.receive_some(1) == b'x'
                scope.cancel()
    assert scope.cancelled_caught


# Summed, the bounds would take a minute; the acknowledgement bound alone is short.
SILENT = {'task_cancel_timeout': 30.0, 'cancel_timeout': 30.0, 'cancel_ack_timeout': 0.3}


@actor_test(bounds=SILENT)
async def test_unacknowledged_cancel_kills_a_spinning_child_at_once():
    """Item 7 of issue 13: a child spinning in a sync function never acknowledges the cancel of that call; the
    call gives up after cancel_ack_timeout and the nursery's cancel that follows kills it at once, without
    waiting out task_cancel_timeout and then cancel_timeout (~5 s with the default bounds, a minute here)."""
    with trio.fail_after(10):
        async with subactor.open_nursery() as an:
            portal = await an.start_actor('spinner', enable_modules=['actors.signalling'])
            await call_and_cancel_once_running(portal, signalling.spin_after_signal)
            assert portal.unresponsive_request() is not None
    assert [k['name'] for k in an.hard_killed] == ['spinner']
    assert (
        'did not acknowledge the cancel request for actors.signalling.spin_after_signal'
        in (an.hard_killed[0]['reason'])
    )


@actor_test(bounds=SILENT)
async def test_cancel_actor_returns_at_once_for_an_unresponsive_actor():
    with trio.fail_after(10):
        async with subactor.open_nursery() as an:
            portal = await an.start_actor('spinner', enable_modules=['actors.signalling'])
            await call_and_cancel_once_running(portal, signalling.spin_after_signal)
            assert await portal.cancel_actor() is False
    assert len(an.hard_killed) == 1


@pytest.mark.parametrize('cancelled', ['call-then-nursery', 'nursery'])
@actor_test(bounds={'task_cancel_timeout': 30.0, 'cancel_timeout': 30.0, 'cancel_ack_timeout': 0.2})
async def test_busy_but_healthy_child_is_not_killed(cancelled):
    """A child that acknowledges and then takes its time (a finally block of 1 s, five times the acknowledgement
    bound) within its budget ends gracefully, whether its call is cancelled first or the nursery cancels it."""
    with trio.fail_after(20):
        async with subactor.open_nursery() as an:
            portal = await an.start_actor('lingerer', enable_modules=['actors.signalling'])
            if cancelled == 'call-then-nursery':
                await call_and_cancel_once_running(portal, signalling.linger_when_cancelled, seconds=1.0)
            else:
                listeners = await trio.open_tcp_listeners(0, host='127.0.0.1')
                async with listeners[0] as listener:
                    port = listener.socket.getsockname()[1]
                    async with trio.open_nursery() as n:

                        async def call():
                            with pytest.raises(subactor.ContextCancelled):
                                await portal.run(signalling.linger_when_cancelled, port=port, seconds=1.0)

                        n.start_soon(call)
                        async with await listener.accept() as stream:
                            assert await stream.receive_some(1) == b'x'
                        await an.cancel()
    assert an.hard_killed == []


@actor_test(bounds={'task_cancel_timeout': 3.0, 'cancel_timeout': 3.5, 'cancel_ack_timeout': 0.3})
async def test_a_cancelled_call_and_the_actor_cancel_share_one_budget():
    """The child acknowledges the cancel of a call that never ends: the call gives up after task_cancel_timeout,
    and the nursery's cancel that follows counts cancel_timeout from that first request (one budget per child):
    the kill comes ~3.5 s after the call's cancel, not 3 + 3.5 s."""
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('stubborn', enable_modules=['actors.signalling'])
        start = trio.current_time()
        with trio.fail_after(5.5):  # summed: 6.5 s
            await call_and_cancel_once_running(portal, signalling.ignore_cancel_after_signal)
            await an.cancel()
            await trio.lowlevel.checkpoint()  # an.cancel() is shielded: this checkpoint delivers the bound
        assert trio.current_time() - start >= 3.0  # it had its grace: the call's request was acknowledged
    assert [k['name'] for k in an.hard_killed] == ['stubborn']
    assert 'did not exit within 3.5 s' in an.hard_killed[0]['reason']
