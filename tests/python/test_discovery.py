# Discovery through the registrar: find_actor, wait_for_actor, duplicate names, lookups from children.
import trio

import subactor
from actors import basic, nested
from subactor.testing import actor_test


@actor_test
async def test_find_missing_actor_yields_none():
    async with subactor.find_actor('nobody-by-this-name') as portal:
        assert portal is None


@actor_test
async def test_find_actor_reaches_a_child_until_it_exits():
    async with subactor.open_nursery() as an:
        child = await an.start_actor('findable', enable_modules=['actors.basic'])
        async with subactor.find_actor('findable') as portal:
            assert portal is not None
            assert portal.peer_uid == child.peer_uid
            assert await portal.run(basic.add, a=3, b=4) == 7
        await child.cancel_actor()
    async with subactor.find_actor('findable') as portal:
        assert portal is None


@actor_test
async def test_wait_for_actor_waits_for_a_later_spawn():
    async with subactor.open_nursery() as an:
        found = {}

        async def waiter(task_status=trio.TASK_STATUS_IGNORED):
            task_status.started()
            async with subactor.wait_for_actor('latecomer') as portal:
                found.update(await portal.run(basic.whoami))

        async with trio.open_nursery() as n:
            await n.start(waiter)
            assert not found
            child = await an.start_actor('latecomer', enable_modules=['actors.basic'])
        assert tuple(found['uid']) == child.peer_uid
        await child.cancel_actor()


@actor_test
async def test_duplicate_names_get_distinct_uids_and_both_register():
    async with subactor.open_nursery() as an:
        first = await an.start_actor('twin', enable_modules=['actors.basic'])
        second = await an.start_actor('twin', enable_modules=['actors.basic'])
        assert first.peer_uid[0] == second.peer_uid[0] == 'twin'
        assert first.peer_uid != second.peer_uid
        assert (await first.run(basic.whoami))['uid'] != (await second.run(basic.whoami))['uid']
        async with subactor.get_registry() as registry:
            addrs = await registry.run_from_ns('subactor._discovery', 'find_actor_addrs', name='twin')
        assert len(addrs) == 2
        assert addrs[0] != addrs[1]
        await first.cancel_actor()
        await second.cancel_actor()


@actor_test
async def test_child_finds_a_sibling_through_the_registrar():
    async with subactor.open_nursery() as an:
        seeker = await an.start_actor('seeker', enable_modules=['actors.nested'])
        target = await an.start_actor('target', enable_modules=['actors.basic'])
        info = await seeker.run(nested.find_and_call, name='target')
        assert tuple(info['uid']) == target.peer_uid
        assert await seeker.run(nested.find_and_call, name='absent') is None
        await an.cancel()


@actor_test
async def test_root_is_the_registrar_and_finds_itself():
    root = subactor.current_actor()
    assert root.is_registrar
    assert root.registry_addr == root.listen_addr
    async with subactor.find_actor('root') as portal:
        assert portal.peer_uid == root.uid
