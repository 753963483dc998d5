# The subint backend's own guarantees: escalation steps, channel abort, abandoned threads, interpreter identity.
import functools
import logging
import os
import subprocess
import sys
import textwrap
import threading

import pytest
import trio
import trio.testing

import subactor
from actors import basic, finalization, stuck
from subactor.testing import actor_test

pytestmark = pytest.mark.skipon_spawn_backend(
    'trio', 'mp_spawn', 'mp_forkserver', 'forkserver', reason='tests of the subint backend itself'
)

FAST = {'cancel_timeout': 0.3, 'interrupt_join_timeout': 1.5}


def _driver():
    from subactor import _driver

    return _driver


async def _hold_context_until_reclaimed(portal, fn, task_status=trio.TASK_STATUS_IGNORED, **kwargs):
    """Open a context on `fn`, report its first value, hold it until the child is reclaimed under it."""
    with pytest.raises((subactor.TransportClosed, subactor.ContextCancelled)):
        async with portal.open_context(fn, **kwargs) as (_, first):
            task_status.started(first)
            await trio.sleep_forever()


@actor_test
async def test_child_reports_its_interpreter_and_shares_the_process():
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('ident', enable_modules=['actors.basic'])
        info = await portal.run(basic.whoami)
    assert info['spawn_method'] == 'subint'
    assert isinstance(info['interp_id'], int) and info['interp_id'] > 0
    assert info['pid'] == os.getpid()


@pytest.mark.parametrize(
    ('fn', 'signal_value'),
    [(stuck.spin_after_started, 'spinning'), (stuck.ignore_cancel_after_started, 'shielded')],
    ids=['spinning_in_python', 'ignoring_cancellation'],
)
@actor_test(bounds=FAST)
async def test_interrupt_reclaims_child(fn, signal_value):
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('stuck', enable_modules=['actors.stuck'])
        async with trio.open_nursery() as n:
            assert await n.start(_hold_context_until_reclaimed, portal, fn) == signal_value
            await an.cancel()
    assert subactor.current_actor().abandoned == []


@actor_test(bounds={**FAST, 'kill_switch_interval': 0.0007})
async def test_a_hard_kill_hands_the_gil_over_quickly_while_it_runs_and_restores_the_switch_interval(
    tmp_path,
):
    before = sys.getswitchinterval()
    seen = tmp_path / 'interval'
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('spinner', enable_modules=['actors.stuck'])
        async with trio.open_nursery() as n:
            hold = functools.partial(_hold_context_until_reclaimed, path=str(seen))
            assert await n.start(hold, portal, stuck.spin_noting_the_switch_interval) == before
            await an.cancel(hard_kill=True)
    assert float(seen.read_text()) == 0.0007, 'the spinning child saw the lowered interval'
    assert sys.getswitchinterval() == before
    assert subactor.current_actor().abandoned == []


@actor_test(bounds={'cancel_timeout': 0.3, 'kill_ack_grace': 10.0})
async def test_kill_byte_alone_unwinds_a_shielded_child_and_runs_its_finally_blocks(tmp_path):
    """The kill byte throws HardKilled into the shielded task itself: no injected exception is needed (the
    grace before injecting is 10 s here), the task's cleanup runs, and the child ends promptly.
    Regression for conc-anal/hard-kill-of-a-shielded-subint-child.md."""
    record = tmp_path / 'ended-with'
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('shielded', enable_modules=['actors.stuck'])
        async with trio.open_nursery() as n:
            hold = functools.partial(_hold_context_until_reclaimed, path=str(record))
            assert await n.start(hold, portal, stuck.ignore_cancel_with_cleanup) == 'shielded'
            start = trio.current_time()
            await an.cancel()
        assert trio.current_time() - start < 5.0  # cancel_timeout + unwinding, far below the 10 s grace
    assert record.read_text() == 'HardKilled'
    assert subactor.current_actor().abandoned == []


@actor_test(bounds=FAST)
async def test_a_hard_kill_injects_nothing_into_a_child_whose_loop_has_ended(tmp_path):
    """The kill byte ends the child's loop; its exit then waits in an atexit callback. The next kill byte gets
    end-of-file: the parent waits for the exit sweep instead of injecting KeyboardInterrupt into it."""
    record = tmp_path / 'atexit-ended-with'
    gate_r, gate_w = os.pipe()
    saw_the_ended_loop = trio.Event()

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            text = record.getMessage()
            if 'its loop has ended' in text or 'injecting KeyboardInterrupt' in text:
                saw_the_ended_loop.set()

    watch = Watch(logging.INFO)
    logger = logging.getLogger('subactor')
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(watch)
    try:
        async with subactor.open_nursery() as an:
            portal = await an.start_actor('slow-exit', enable_modules=['actors.stuck'])
            await portal.run(stuck.block_exit_until, gate=gate_r, path=str(record))
            async with trio.open_nursery() as n:
                n.start_soon(functools.partial(an.cancel, hard_kill=True))
                await saw_the_ended_loop.wait()
                os.write(gate_w, b'x')
    finally:
        logger.removeHandler(watch)
        logger.setLevel(level)
        os.close(gate_r)
        os.close(gate_w)
    assert record.read_text() == 'clean'
    assert subactor.current_actor().abandoned == []


@actor_test(bounds=FAST)
async def test_hard_kill_aborts_channel_so_parked_receiver_wakes():
    """A parent task parked on a stream from a child the parent gives up on wakes with TransportClosed."""
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('streamer', enable_modules=['actors.stuck'])
        woke = trio.Event()
        async with trio.open_nursery() as n:

            async def consume():
                with pytest.raises((subactor.TransportClosed, subactor.ContextCancelled, trio.EndOfChannel)):
                    async with portal.open_context(stuck.stream_forever) as (ctx, _):
                        async with ctx.open_stream() as stream:
                            async for _ in stream:
                                pass
                woke.set()

            n.start_soon(consume)
            await an.cancel(hard_kill=True)
            await woke.wait()


@actor_test
async def test_worker_threads_of_child_are_gone_before_its_interpreter_ends():
    before = threading.active_count()
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('threads', enable_modules=['actors.stuck', 'actors.basic'])
        interp_id = (await portal.run(basic.whoami))['interp_id']
        assert await portal.run(stuck.use_worker_thread) == 'from a worker thread'
    assert threading.active_count() == before
    # Done: no thread of it runs any more. Its interpreter may still be finalizing ('ending') for a moment.
    assert [i['state'] for i in _driver().live() if i['id'] == interp_id] in ([], ['ending'])


@actor_test
async def test_nested_subint_tree_tears_down():
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('middle', enable_modules=['actors.nested_subint'])
        leaves = await portal.run_from_ns('actors.nested_subint', 'spawn_leaves', count=2)
    assert len(leaves) == 2
    assert all(leaf['spawn_method'] == 'subint' for leaf in leaves)
    assert len({leaf['interp_id'] for leaf in leaves}) == 2


ABANDON_SCRIPT = textwrap.dedent(
    """
    import sys, time, warnings
    import trio, subactor
    sys.path.insert(0, {tests!r})
    from actors import stuck

    async def main():
        async with subactor.open_root_actor(start_method='subint', bounds={{'cancel_timeout': 0.2,
                                                                          'interrupt_join_timeout': 0.3}}):
            async with subactor.open_nursery() as an:
                portal = await an.start_actor('stuck_in_c', enable_modules=['actors.stuck'])
                async with trio.open_nursery() as n:
                    async def hold(task_status=trio.TASK_STATUS_IGNORED):
                        try:
                            async with portal.open_context(stuck.block_in_c_after_started) as (_, first):
                                task_status.started(first)
                                await trio.sleep_forever()
                        except (subactor.TransportClosed, subactor.ContextCancelled):
                            pass
                    await n.start(hold)
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter('always')
                        await an.cancel()
                    print('warned:', [str(w.category.__name__) for w in caught], flush=True)
            print('abandoned:', [a['name'] for a in subactor.current_actor().abandoned], flush=True)
        print('root exited', flush=True)

    trio.run(main)
    """
)


@pytest.mark.slow
def test_child_stuck_in_c_is_abandoned_and_does_not_block_exit(tmp_path):
    script = tmp_path / 'abandon.py'
    script.write_text(ABANDON_SCRIPT.format(tests=os.path.dirname(__file__)))
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=30, env=dict(os.environ)
    )
    assert "abandoned: ['stuck_in_c']" in proc.stdout, proc.stdout + proc.stderr
    assert "warned: ['ChildAbandoned']" in proc.stdout, proc.stdout + proc.stderr
    assert 'root exited' in proc.stdout
    assert 'Segmentation fault' not in proc.stderr and proc.returncode >= 0, proc.stderr


@actor_test(timeout=60)
async def test_nursery_teardown_returns_once_children_are_done_while_their_interpreters_still_end(
    warm_pool_size, monkeypatch
):
    """Leaving the nursery waits for each child to be done (done_fd), not for its interpreter's finalization: here
    every child's finalization blocks on a pipe, so they are all provably still 'ending' when the teardown has
    returned; released, all of them finish within a bound. Regression for
    conc-anal/subint-finalization-off-the-teardown-path.md."""
    warm_pool_size(0)  # cold spawns go through _driver.spawn, where the test gets to see their handles
    driver = _driver()
    handles = []
    real_spawn = driver.spawn

    def spawn(*args, **kwargs):
        handle = real_spawn(*args, **kwargs)
        handles.append(handle)
        return handle

    monkeypatch.setattr(driver, 'spawn', spawn)
    r, w = os.pipe()
    try:
        async with subactor.open_nursery() as an:
            for i in range(3):
                portal = await an.start_actor(f'slow-to-end-{i}', enable_modules=['actors.finalization'])
                await portal.run(finalization.block_finalization_on, fd=r)
        assert len(handles) == 3
        assert [h.state for h in handles] == ['ending'] * 3, 'the teardown did not wait for finalization'
        assert all(h.outcome.ok for h in handles)
        ids = {h.id for h in handles}
        assert sorted(e['state'] for e in driver.live() if e['id'] in ids) == ['ending'] * 3
    finally:
        os.close(w)  # EOF: every blocked finalization goes on
        with trio.fail_after(20):
            finished = await trio.to_thread.run_sync(lambda: [h.join(20) for h in handles])
        os.close(r)
    assert finished == [True] * 3
    assert [h.state for h in handles] == ['finished'] * 3
    assert [e for e in driver.live() if e['id'] in ids] == []
