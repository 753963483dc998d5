# Cancellation: scopes reach whole subtrees, an.cancel() escalates to a kill, and stuck actors still end.
import os
import signal

import pytest
import trio

import subactor
from actors import basic, nested, stuck
from subactor.testing import actor_test


def process_gone(pid):
    """True when `pid` no longer runs (a zombie counts as gone: it runs nothing)."""
    psutil = pytest.importorskip('psutil')
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def call_until_killed(portal, fn):
    with pytest.raises((subactor.TransportClosed, subactor.ContextCancelled)):
        await portal.run(fn)


@actor_test
async def test_cancelling_parent_scope_cancels_the_subtree():
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('middle', enable_modules=['actors.nested'])
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as n:
                n.start_soon(portal.run, nested.spawn_sleeping_grandchild)
                async with subactor.wait_for_actor('sleeping-grandchild') as gc:
                    grandchild = await gc.run(basic.whoami)
                scope.cancel()
        assert scope.cancelled_caught
        # The middle actor is still up (only the call was cancelled) and its grandchild is gone.
        assert await portal.run_from_ns('actors.nested', 'find_and_call', name='sleeping-grandchild') is None
        await portal.cancel_actor()
    if grandchild['pid'] != os.getpid():
        assert process_gone(grandchild['pid'])


@actor_test(bounds={'cancel_timeout': 0.5})
async def test_an_cancel_kills_a_child_that_ignores_cancellation():
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('stubborn', enable_modules=['actors.basic'])
        info = await portal.run(basic.whoami)
        async with trio.open_nursery() as n:
            n.start_soon(call_until_killed, portal, basic.ignore_cancel)
            start = trio.current_time()
            await an.cancel()
        # Asked, waited the bound, then killed: well under the 3 s default.
        assert trio.current_time() - start < 2.5
        assert portal.channel.closed
    if info['pid'] != os.getpid():
        assert process_gone(info['pid'])


@actor_test(bounds={'cancel_timeout': 0.5})
async def test_nursery_exit_kills_a_child_that_ignores_cancellation():
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('stubborn', enable_modules=['actors.basic'])
        # Start the stuck call, then leave: the exit must not wait forever on it.
        with trio.move_on_after(0):
            await portal.run(basic.ignore_cancel)
    assert portal.channel.closed


@actor_test
async def test_outer_cancel_scope_cancels_nursery_and_children():
    with trio.CancelScope() as scope:
        async with subactor.open_nursery() as an:
            portals = [
                await an.start_actor(f'sleeper-{i}', enable_modules=['actors.basic']) for i in range(2)
            ]
            async with trio.open_nursery() as n:
                for portal in portals:
                    n.start_soon(portal.run, basic.sleep_forever)
                scope.cancel()
    assert scope.cancelled_caught
    assert all(p.channel.closed for p in portals)


def actor_gone(info):
    """True when the actor described by `whoami()` runs no more: its process, or its interpreter."""
    if info['pid'] != os.getpid():
        return process_gone(info['pid'])
    from subactor import _driver

    return all(entry['id'] != info['interp_id'] for entry in _driver.live())


async def wait_gone(info, bound):
    with trio.fail_after(bound):
        while not actor_gone(info):  # noqa: ASYNC110 (no event exists for another process or thread exiting)
            await trio.sleep(0.02)


async def cancel_tree_with_stuck_grandchild(*, hard_kill, gone_within):
    """Root -> 'middle' -> 'stuck-grandchild' (ignoring cancellation); cancel from the root, then require the
    grandchild gone within `gone_within` seconds (a leftover process is killed either way)."""
    grandchild = None
    try:
        async with subactor.open_nursery() as an:
            portal = await an.start_actor('middle', enable_modules=['actors.nested'])
            async with trio.open_nursery() as n:
                n.start_soon(call_until_killed, portal, nested.spawn_stuck_grandchild)
                async with subactor.wait_for_actor('stuck-grandchild') as gc:
                    grandchild = await gc.run(basic.whoami)
                await an.cancel(hard_kill=hard_kill)
        await wait_gone(grandchild, gone_within)
    finally:
        if (
            grandchild is not None
            and grandchild['pid'] != os.getpid()
            and not process_gone(grandchild['pid'])
        ):
            os.kill(grandchild['pid'], signal.SIGKILL)


# No orphan reaper here (orphan_timeout 30 s): only the cancel budget can pass.
@actor_test(bounds={'cancel_timeout': 0.5, 'orphan_timeout': 30})
async def test_cancel_reaches_stuck_grandchild():
    """The root's cancel budget (0.5 s) reaches the middle actor, which asks its stuck grandchild within half of
    it and then kills it, so the root never has to kill the middle with the grandchild still alive.
    Regression for conc-anal/orphaned-grandchild-after-parent-kill.md."""
    await cancel_tree_with_stuck_grandchild(hard_kill=False, gone_within=3)


# interrupt_join_timeout above the middle's own exit sweep (EXIT_JOIN_TIMEOUT, 2 s): a killed subint middle whose
# loop has ended still waits (in C) for its grandchild to be done; with equal bounds a loaded machine let the root
# abandon the middle first (seen once in four full runs).
@actor_test(bounds={'cancel_timeout': 0.3, 'orphan_timeout': 0.3, 'interrupt_join_timeout': 5.0})
async def test_orphan_whose_parent_was_killed_ends_itself():
    """The middle actor is hard-killed at once (no budget to pass on): its grandchild, ignoring cancellation,
    sees its parent channel drop and, after `orphan_timeout`, aborts its own tasks and ends (or the middle,
    killed, kills it first)."""
    await cancel_tree_with_stuck_grandchild(hard_kill=True, gone_within=5)


async def spin_until_gone(portal, spinning):
    """Make the actor behind `portal` spin in a sync function (its trio loop blocked), set `spinning`, and hold
    the context until the actor is gone."""
    with pytest.raises((subactor.TransportClosed, subactor.ContextCancelled)):
        async with portal.open_context(stuck.spin_in_a_sync_function_after_started) as (_ctx, first):
            assert first == 'spinning'
            spinning.set()
            await trio.sleep_forever()


@actor_test(bounds={'orphan_timeout': 0.3})
async def test_spinning_orphan_exits_after_its_parent_process_is_killed():
    """Root -> 'middle' -> 'spinning-grandchild', the grandchild's loop blocked in a sync function; SIGKILL the
    middle. The grandchild's loop never runs again, so the trio-side orphan reaper cannot act: its native
    watchdog, watching the middle's process, exits it 2 * orphan_timeout later. Regression for
    conc-anal/orphaned-grandchild-after-parent-kill.md (issue 13 item 5)."""
    grandchild = pidfd = None
    try:
        # The middle's death is reported as its failure, which also ends the nursery's body.
        with pytest.raises(subactor.ActorFailure, match="'middle' exited unexpectedly"):
            async with subactor.open_nursery() as an:
                portal = await an.start_actor('middle', enable_modules=['actors.nested', 'actors.basic'])
                middle = await portal.run(basic.whoami)
                if middle['pid'] == os.getpid():
                    pytest.skip('an in-process child: its parent cannot die alone')
                async with trio.open_nursery() as n:
                    n.start_soon(call_until_killed, portal, nested.spawn_grandchild_to_spin)
                    async with subactor.wait_for_actor('spinning-grandchild') as gc:
                        grandchild = await gc.run(basic.whoami)
                        pidfd = os.pidfd_open(grandchild['pid'])
                        spinning = trio.Event()
                        n.start_soon(spin_until_gone, gc, spinning)
                        await spinning.wait()
                        os.kill(middle['pid'], signal.SIGKILL)
                        await trio.sleep_forever()
        # Readable once the grandchild's process has exited; its watchdog fires 0.6 s after the kill.
        with trio.fail_after(10):
            await trio.lowlevel.wait_readable(pidfd)
    finally:
        if pidfd is not None:
            os.close(pidfd)
        if grandchild is not None and not process_gone(grandchild['pid']):
            os.kill(grandchild['pid'], signal.SIGKILL)


@actor_test(bounds={'kill_ack_grace': 0.2, 'interrupt_join_timeout': 2.0, 'terminate_timeout': 0.5})
async def test_two_hard_kills_of_one_child_at_once_end_it_once():
    """A spawn whose registration is cancelled kills its child while the nursery's cancel kills it too: the
    second kill waits for the first instead of waiting on the same descriptor (BusyResourceError)."""
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('spinner', enable_modules=['actors.stuck'])
        rec = next(rec for rec in an._children.values() if rec.portal is portal)
        rec.cancel_requested = True  # as the nursery's own kill paths mark it: its exit is expected
        child = rec.child
        async with trio.open_nursery() as n:
            await n.start(_hold_context_until_killed, portal)  # the child spins: it acknowledges nothing
            with trio.fail_after(20):
                async with trio.open_nursery() as kills:
                    kills.start_soon(child.hard_kill)
                    kills.start_soon(child.hard_kill)
                await rec.exited.wait()  # its supervisor saw it gone (and released it: no child.exited() now)
        await an.cancel()


async def _hold_context_until_killed(portal, task_status=trio.TASK_STATUS_IGNORED):
    with pytest.raises((subactor.TransportClosed, subactor.ContextCancelled)):
        async with portal.open_context(stuck.spin_after_started) as (_, first):
            assert first == 'spinning'
            task_status.started()
            await trio.sleep_forever()
