# Spawning and supervision: start_actor, run_in_actor, actor identity, and the nursery's lifetime guarantees.
import pytest
import trio

import subactor
from actors import basic
from subactor.testing import actor_test


@actor_test
async def test_child_knows_its_identity_and_parent(start_method):
    root = subactor.current_actor()
    assert root.name == 'root'
    assert root.is_root
    assert root.spawn_method == start_method
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('identity', enable_modules=['actors.basic'])
        info = await portal.run(basic.whoami)
        assert info['name'] == 'identity'
        assert info['uid'][0] == 'identity'
        assert tuple(info['uid']) == portal.peer_uid
        assert info['parent_uid'] == list(root.uid)
        assert info['spawn_method'] == start_method
        assert info['interp_id'] is None or isinstance(info['interp_id'], int)
        await portal.cancel_actor()


@actor_test
async def test_run_in_actor_returns_result():
    async with subactor.open_nursery() as an:
        portal = await an.run_in_actor(basic.async_add, a=20, b=22)
        named = await an.run_in_actor(basic.whoami, name='named-runner')
        assert await portal.wait_for_result() == 42
        assert (await named.wait_for_result())['name'] == 'named-runner'
    # Still available after the nursery closed.
    assert await portal.wait_for_result() == 42


@actor_test
async def test_nursery_block_waits_for_run_in_actor_results():
    async with subactor.open_nursery() as an:
        portal = await an.run_in_actor(basic.echo, name='late', value='finished')
        # Leave the block at once: the exit must wait for the result, not abandon the child.
    assert portal.channel.closed
    assert await portal.wait_for_result() == 'finished'


@actor_test
async def test_nursery_exit_cancels_start_actor_children():
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('lingering', enable_modules=['actors.basic'])
        assert await portal.run(basic.add, a=1, b=1) == 2
        assert portal.peer_uid in an.children
    assert portal.channel.closed
    assert an.children == {}


@actor_test
async def test_an_cancel_ends_children_and_refuses_new_ones():
    async with subactor.open_nursery() as an:
        portals = [await an.start_actor(f'w{i}', enable_modules=['actors.basic']) for i in range(2)]
        await an.cancel()
        assert all(p.channel.closed for p in portals)
        assert an.children == {}
        with pytest.raises(RuntimeError, match='closing'):
            await an.start_actor('too-late')


@actor_test
async def test_child_starts_with_the_garbage_collector_on():
    """Start-up imports run with the collector paused and what they built is frozen afterwards (no collection
    walks it again): the collector is back on, collecting the actor's own garbage, before the actor serves."""
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('collected', enable_modules=['actors.basic'])
        state = await portal.run(basic.runtime_state)
        assert state == {'gc_enabled': True, 'user_cycle_collected': True, 'runtime_frozen': True}
        await portal.cancel_actor()


@actor_test
async def test_wait_for_result_needs_run_in_actor():
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('plain', enable_modules=['actors.basic'])
        with pytest.raises(RuntimeError, match='run_in_actor'):
            await portal.wait_for_result()
        await portal.cancel_actor()


@actor_test
async def test_start_actor_validates_its_arguments():
    async with subactor.open_nursery() as an:
        with pytest.raises(ValueError, match='non-empty string'):
            await an.start_actor('')
        with pytest.raises(TypeError, match='module names'):
            await an.start_actor('x', enable_modules=[basic])


@actor_test
async def test_cancel_actor_is_acknowledged():
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('to-cancel', enable_modules=['actors.basic'])
        assert await portal.cancel_actor() is True
        # The requested exit is not a failure: wait for it inside the block.
        while portal.peer_uid in an.children:  # noqa: ASYNC110 (no event exists for a child leaving the nursery)
            await trio.sleep(0.01)
    # A second request is a no-op.
    assert await portal.cancel_actor() is False


@actor_test(root=False)
async def test_open_nursery_opens_a_root_when_none_runs(start_method):
    with pytest.raises(subactor.NoRuntime):
        subactor.current_actor()
    async with subactor.open_nursery(start_method=start_method, name='implicit-root') as an:
        assert subactor.current_actor().name == 'implicit-root'
        portal = await an.start_actor('child', enable_modules=['actors.basic'])
        assert (await portal.run(basic.whoami))['parent_uid'][0] == 'implicit-root'
    with pytest.raises(subactor.NoRuntime):
        subactor.current_actor()


@actor_test
async def test_open_nursery_rejects_root_options_inside_a_root():
    with pytest.raises(TypeError, match='open_root_actor'):
        async with subactor.open_nursery(transport='uds'):
            pass


@actor_test
async def test_root_actor_is_entered_once():
    with pytest.raises(RuntimeError, match='already running'):
        async with subactor.open_root_actor():
            pass


@actor_test(root=False)
async def test_root_rejects_unknown_transport_and_spawn_method():
    with pytest.raises(ValueError, match='unknown transport'):
        async with subactor.open_root_actor(transport='carrier-pigeon'):
            pass
    with pytest.raises(ValueError, match='unknown spawn method'):
        async with subactor.open_root_actor(start_method='no-such-method'):
            pass
