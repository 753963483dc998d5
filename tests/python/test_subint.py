# The subint backend's own guarantees: escalation steps, channel abort, abandoned threads, interpreter identity.
import functools
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
    'trio', 'mp_spawn', 'mp_forkserver', reason='tests of the subint backend itself'
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


def _native_names():
    return {entry['id']: entry['name'] for entry in _driver().live()}


@pytest.fixture
def warm_pool_size():
    """Set the warm pool's size for one test; the default pool comes back afterwards."""
    from subactor._spawn import _warm_pool

    yield subactor.set_warm_pool_size
    subactor.set_warm_pool_size(_warm_pool.DEFAULT_POOL_SIZE)


@actor_test
async def test_spawning_faster_than_the_pool_refills_still_works(warm_pool_size):
    warm_pool_size(2)
    await subactor.wait_warm_pool_ready(timeout=60)
    infos = []
    async with subactor.open_nursery() as an:

        async def spawn_and_ask(i):
            portal = await an.start_actor(f'burst{i}', enable_modules=['actors.basic'])
            infos.append(await portal.run(basic.whoami))

        async with trio.open_nursery() as n:
            for i in range(6):  # three times the pool: some find it empty and start cold
                n.start_soon(spawn_and_ask, i)
        names = _native_names()
        assert sorted(info['name'] for info in infos) == [f'burst{i}' for i in range(6)]
        assert len({info['interp_id'] for info in infos}) == 6
        # The pool served at least its size (the driver names pooled interpreters 'subint-warm'); a spawn that
        # found it empty started cold (named after its actor) and started the refill others then waited for.
        kinds = [names[info['interp_id']] for info in infos]
        assert kinds.count('subint-warm') >= 2
        assert set(kinds) - {'subint-warm'} <= {f'burst{i}' for i in range(6)}
        await an.cancel()


@actor_test
async def test_warm_pool_reports_readiness_and_refills_after_the_handshake(warm_pool_size):
    warm_pool_size(2)
    assert subactor.warm_pool_status() == subactor.WarmPoolStatus(size=2, ready=0, warming=1)  # one at a time
    await subactor.wait_warm_pool_ready(timeout=60)
    assert subactor.warm_pool_status() == subactor.WarmPoolStatus(size=2, ready=2, warming=0)
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('from-pool', enable_modules=['actors.basic'])
        info = await portal.run(basic.whoami)
        assert _native_names()[info['interp_id']] == 'subint-warm'
        # The handshake is over, so the replacement was started: the pool is back to its size.
        status = subactor.warm_pool_status()
        assert status.ready + status.warming == 2 and status.ready >= 1
        await subactor.wait_warm_pool_ready(timeout=60)
        assert subactor.warm_pool_status().ready == 2
        await portal.cancel_actor()


@actor_test
async def test_nested_actors_spawn_warm_from_the_pool_the_root_lends(warm_pool_size):
    """A subint parent running in a subinterpreter takes its children from the shelf the root's pool lends its
    ready interpreters to; each adopted child counts that parent as its own; the root's pool refills."""
    from subactor._spawn import _warm_pool

    warm_pool_size(3)
    await subactor.wait_warm_pool_ready(timeout=60)
    lent = {handle.id for handle in _warm_pool._pool.handles()}
    assert len(lent) == 3 and subactor.warm_pool_status().ready == 3
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('middle', enable_modules=['actors.nested_subint'])
        report = await portal.run_from_ns('actors.nested_subint', 'spawn_leaf_and_report')
        await portal.cancel_actor()
    assert report['me'] in lent and report['leaf'] in lent, (report, lent)
    assert report['leaf_parents'] == [report['me']]
    await subactor.wait_warm_pool_ready(timeout=60)
    assert subactor.warm_pool_status() == subactor.WarmPoolStatus(size=3, ready=3, warming=0)


@actor_test
async def test_a_lent_interpreter_that_ended_on_the_shelf_is_skipped(warm_pool_size):
    from subactor import _native

    warm_pool_size(1)
    await subactor.wait_warm_pool_ready(timeout=60)
    [(handle, _, held)] = _native.shelf_items()
    # It sleeps in its trio loop's epoll: the injected exception lands once a byte on the loop's wake-up socket
    # (held: its control end, then the loop's epoll and wake-up socketpairs) lets it run Python again.
    assert handle.interrupt('SystemExit')
    os.write(held[3], b'!')
    await trio.lowlevel.wait_readable(handle.done_fd)
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('after', enable_modules=['actors.basic'])
        assert await portal.run(basic.add, a=1, b=2) == 3
        await portal.cancel_actor()
    assert handle.join(10)  # released by the spawn that skipped it; its end closes what it held


@actor_test
async def test_an_interpreter_without_a_pool_spawns_cold_when_the_shelf_is_empty(warm_pool_size):
    warm_pool_size(0)
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('middle', enable_modules=['actors.nested_subint'])
        report = await portal.run_from_ns('actors.nested_subint', 'spawn_leaf_and_report')
        await portal.cancel_actor()
    assert report['leaf_parents'] == [report['me']]  # spawned by it


@actor_test
async def test_pool_warms_one_interpreter_at_a_time(warm_pool_size, monkeypatch):
    """Each pooled interpreter starts only once the previous one is ready: concurrent imports would only share
    the GIL among themselves and the application's loop, readying none of them sooner."""
    from subactor._spawn import _warm_pool

    driver = _driver()
    warming_when_spawned = []
    real_spawn = driver.spawn

    def spawn(code, **kwargs):
        if kwargs.get('name') == 'subint-warm' and _warm_pool._pool is not None:
            warming_when_spawned.append(sum(e.check_ready() is False for e in _warm_pool._pool._idle))
        return real_spawn(code, **kwargs)

    monkeypatch.setattr(driver, 'spawn', spawn)
    warm_pool_size(3)
    pool = _warm_pool._pool
    # Nobody calls into the pool meanwhile: its own refill task starts each next one (else this never ends).
    # A ready one is lent to the shelf at once and leaves `_idle`: wait on the one warming, if any.
    while subactor.warm_pool_status().ready < 3:
        if pool._idle:
            await pool._idle[-1].wait_ready()
        await trio.testing.wait_all_tasks_blocked()
    assert warming_when_spawned == [0, 0, 0]
    assert subactor.warm_pool_status() == subactor.WarmPoolStatus(size=3, ready=3, warming=0)


@actor_test
async def test_a_ready_pool_holds_only_descriptors_the_leak_gate_accounts_for(warm_pool_size):
    from subactor.devx import snapshot_resources

    warm_pool_size(0)
    before = snapshot_resources()
    warm_pool_size(2)
    await subactor.wait_warm_pool_ready(timeout=60)
    after = snapshot_resources()
    # Idle pooled interpreters sit in a running trio loop (epoll, wake-up sockets) on their control socket:
    # all of it reported by the pool, none of it visible as a leak.
    assert {fd: t for fd, t in after.fds.items() if before.fds.get(fd) != t} == {}
    assert after.interpreters == before.interpreters


def test_warm_pool_status_without_a_pool(warm_pool_size):
    warm_pool_size(0)
    assert subactor.warm_pool_status() == subactor.WarmPoolStatus(size=0, ready=0, warming=0)
    trio.run(subactor.wait_warm_pool_ready, 0.0)  # nothing to wait for: returns at once


@actor_test
async def test_pooled_interpreter_failing_its_warm_up_is_replaced_by_a_cold_spawn(
    warm_pool_size, monkeypatch, caplog
):
    from subactor._spawn import _warm_pool

    # A bootstrap that fails the way a broken install would: after taking its control socket, before ready.
    broken = "import os as _os\n_os.close({control_fd})\nraise RuntimeError('warm-up broke')\n"
    monkeypatch.setattr(_warm_pool, '_WARM_BOOTSTRAP', broken)
    warm_pool_size(1)
    with caplog.at_level('WARNING', logger='subactor'):
        async with subactor.open_nursery() as an:
            portal = await an.start_actor('despite-pool', enable_modules=['actors.basic'])
            info = await portal.run(basic.whoami)
            assert _native_names()[info['interp_id']] == 'despite-pool'  # started cold
            await portal.cancel_actor()
    assert any(
        'ended before it was ready' in r.message and 'warm-up broke' in r.message for r in caplog.records
    )
    subactor.close_warm_pool()  # its broken refill, before the fixture restores the default


@actor_test
async def test_warm_spawn_cancelled_before_its_handshake_lets_the_interpreter_go(warm_pool_size, monkeypatch):
    """A pooled interpreter is told what to serve only once the parent's hello and spec are written; a spawn
    cancelled before that closes its control socket and the interpreter ends by itself: no kill byte, no
    injected exception, nothing abandoned, and the pool refills."""
    from subactor._spawn import _subint

    kills = []
    monkeypatch.setattr(_subint.SubintChild, '_send_kill_byte', lambda self: kills.append(self.handle.id))
    warm_pool_size(1)
    await subactor.wait_warm_pool_ready(timeout=60)
    async with subactor.open_nursery() as an:
        with trio.CancelScope() as scope:
            scope.cancel()
            await an.start_actor('never-assigned', enable_modules=['actors.basic'])
        assert scope.cancelled_caught
        await subactor.wait_warm_pool_ready(timeout=60)
        portal = await an.start_actor('next', enable_modules=['actors.basic'])
        info = await portal.run(basic.whoami)
        assert _native_names()[info['interp_id']] == 'subint-warm'
        await portal.cancel_actor()
    assert kills == []
    assert subactor.current_actor().abandoned == []


@actor_test
async def test_pool_disabled_spawns_cold(warm_pool_size):
    warm_pool_size(0)
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('cold-one', enable_modules=['actors.basic'])
        info = await portal.run(basic.whoami)
        assert _native_names()[info['interp_id']] == 'cold-one'
        await portal.cancel_actor()


@actor_test
async def test_each_pooled_interpreter_serves_exactly_one_actor(warm_pool_size):
    warm_pool_size(1)
    seen = []
    async with subactor.open_nursery() as an:
        for name in ('first', 'second'):
            portal = await an.start_actor(name, enable_modules=['actors.basic'])
            seen.append((await portal.run(basic.whoami))['interp_id'])
            # Module state starts empty: nothing of the previous actor is visible.
            assert await portal.run(basic.mark_this_interpreter, value=name) == [name]
            await portal.cancel_actor()
    assert seen[0] != seen[1]


@pytest.mark.parametrize('size', [-1, 1.5, '2'])
def test_bad_warm_pool_size_is_refused(size):
    with pytest.raises(ValueError, match='warm pool size must be a non-negative int'):
        subactor.set_warm_pool_size(size)


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
