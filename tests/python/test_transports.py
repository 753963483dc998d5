# Transports: TCP on loopback, and Unix sockets (0600 files in a per-user 0700 directory, removed on exit).
import os
import signal
import stat

import pytest
import trio

import subactor
from actors import basic
from subactor import _ipc
from subactor.testing import actor_test


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@actor_test
async def test_tcp_listens_on_loopback():
    root = subactor.current_actor()
    assert root.listen_addr[0] == 'tcp'
    assert root.listen_addr[1] == '127.0.0.1'
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('tcp-child', enable_modules=['actors.basic'])
        assert portal.channel.peer_listen_addr is None or portal.channel.peer_listen_addr[0] == 'tcp'
        assert await portal.run(basic.add, a=1, b=1) == 2
        await portal.cancel_actor()


@actor_test(root=False)
async def test_uds_socket_files_are_private_and_removed_on_exit(start_method):
    async with subactor.open_root_actor(start_method=start_method, transport='uds') as root:
        kind, path, _ = root.listen_addr
        assert kind == 'uds'
        assert os.path.dirname(path) == _ipc.runtime_dir()
        assert mode(_ipc.runtime_dir()) == 0o700
        assert mode(path) == 0o600
        async with subactor.open_nursery() as an:
            portal = await an.start_actor('uds-child', enable_modules=['actors.basic'])
            async with subactor.find_actor('uds-child') as found:
                child_path = found.channel.peer_listen_addr[1]
                assert await found.run(basic.add, a=2, b=2) == 4
            assert mode(child_path) == 0o600
            assert os.path.dirname(child_path) == _ipc.runtime_dir()
            await portal.cancel_actor()
        assert not await trio.Path(child_path).exists()
    assert not await trio.Path(path).exists()


@actor_test(root=False)
async def test_uds_socket_file_removed_after_child_is_killed(start_method):
    async with subactor.open_root_actor(start_method=start_method, transport='uds'):
        with pytest.raises(subactor.ActorFailure) as info:
            async with subactor.open_nursery() as an:
                portal = await an.start_actor('doomed', enable_modules=['actors.basic'])
                me = await portal.run(basic.whoami)
                async with subactor.find_actor('doomed') as found:
                    child_path = found.channel.peer_listen_addr[1]
                assert await trio.Path(child_path).exists()
                if me['pid'] != os.getpid():
                    os.kill(me['pid'], signal.SIGKILL)
                    expected_status = -signal.SIGKILL
                else:  # a subint child cannot be killed alone: it ends itself abruptly
                    expected_status = 9
                    with pytest.raises(subactor.TransportClosed):
                        await portal.run(basic.exit_now, code=9)
                await trio.sleep_forever()
        assert info.value.exit_status == expected_status
        assert not await trio.Path(child_path).exists()


@actor_test(root=False)
async def test_root_serves_as_registrar_on_a_given_address(start_method):
    # Reserve a free port, release it, and ask the root to be the registrar there.
    probe = await _ipc.listen(('tcp', '127.0.0.1', 0))
    addr = probe.addr
    await probe.aclose()
    async with subactor.open_root_actor(start_method=start_method, registry_addr=addr) as root:
        assert root.is_registrar
        assert root.listen_addr == addr
        async with subactor.open_nursery() as an:
            portal = await an.start_actor('registered', enable_modules=['actors.basic'])
            async with subactor.find_actor('registered') as found:
                assert found.peer_uid == portal.peer_uid
            await portal.cancel_actor()
