# The subint warm pool: readiness, refills, lending to the shelf, one actor per interpreter, and the ownership
# of each pooled interpreter's control socket.
import os
import socket

import pytest
import trio
import trio.testing

import subactor
from actors import basic
from subactor.testing import actor_test

pytestmark = pytest.mark.skipon_spawn_backend(
    'trio', 'mp_spawn', 'mp_forkserver', 'forkserver', reason='tests of the subint backend itself'
)


def _driver():
    from subactor import _driver

    return _driver


def _native_names():
    return {entry['id']: entry['name'] for entry in _driver().live()}


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


@actor_test
async def test_an_interpreter_lent_while_its_refill_task_waits_on_it_leaves_no_waiter_on_the_fd(
    warm_pool_size,
):
    """Regression for conc-anal/warm-pool-fd-reuse.md: the pool's refill task waits on a warming interpreter's
    control socket; a spawn that reads its readiness line first lends it (detaching the socket), the taker closes
    it, and the next descriptor with that number must be free to wait on in this trio run (it inherited the
    stale waiter: BusyResourceError in a handshake, and the waiter woke on a stranger's data)."""
    from subactor import _native
    from subactor._spawn import _warm_pool

    warm_pool_size(1)
    pool = _warm_pool._pool
    [entry] = pool._idle
    await trio.testing.wait_all_tasks_blocked()
    assert entry._watched is not None, 'the refill task waits on its control socket'
    assert pool.settle(60)  # its readiness line is there, and the waiting task has not run since
    fd = entry.control.fileno()
    taken = await pool.take(patience=0)  # lends every ready one, then takes one back: no checkpoint between
    assert taken is not None and taken.handle is entry.handle and taken.control.fileno() == fd
    a, b = socket.socketpair()  # made while `fd` is still taken
    assert taken.release(10)
    try:
        os.dup2(a.fileno(), fd)  # the next descriptor to get that number
        b.send(b'x')
        with trio.fail_after(10):
            await trio.lowlevel.wait_readable(fd)
        trio.lowlevel.notify_closing(fd)
        os.close(fd)
    finally:
        a.close()
        b.close()
    assert _native.shelf_in_flight() == 1
    pool.spawn_complete(taken)  # as a spawn would: the pool refills
    with trio.fail_after(60):
        await subactor.wait_warm_pool_ready()


@actor_test
async def test_settle_waits_on_a_control_socket_numbered_above_1023(warm_pool_size):
    """After a large tree the refill's control socket can get a number select() cannot take (ValueError)."""
    import resource

    from subactor._spawn import _warm_pool

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 1100:
        pytest.skip(f'needs an fd limit above 1100 (hard limit {hard})')
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1100), hard))
    warm_pool_size(0)  # closing a pool frees low numbers: close it before filling them
    filler = []
    try:
        while True:  # fill every number up to 1050: the pool's next socketpair lands above 1023
            fd = os.open(os.devnull, os.O_RDONLY)
            filler.append(fd)
            if fd >= 1050:
                break
        warm_pool_size(1)
        [entry] = _warm_pool._pool._idle
        assert entry.control.fileno() > 1023
        assert _warm_pool._pool.settle(60)
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    await subactor.wait_warm_pool_ready(60)
