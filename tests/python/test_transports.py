# Transports: TCP on loopback, and Unix sockets (0600 files in a per-user 0700 directory, removed on exit).
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile

import pytest
import trio

import subactor
from actors import basic
from subactor import _ipc, devx
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


# -- the private socket directory (no XDG_RUNTIME_DIR: it lives in the shared temporary directory) ---------------

NOBODY = 65534


@pytest.fixture
def shared_tmp(monkeypatch):
    """A sticky, world-writable temporary directory standing in for /tmp, used as the socket directory's base."""
    path = tempfile.mkdtemp(prefix='shared-tmp-')
    os.chmod(path, 0o1777)
    monkeypatch.delenv('XDG_RUNTIME_DIR', raising=False)
    monkeypatch.setattr(tempfile, 'tempdir', path)
    yield path
    shutil.rmtree(path)


def as_nobody(script):
    """Run `script` (Python) as uid nobody; its exit status. The tests run as root, so they can switch."""
    if os.getuid() != 0:
        pytest.skip('needs root to run a process as another user')
    return subprocess.run([sys.executable, '-I', '-S', '-c', script], user=NOBODY, timeout=30).returncode


def test_socket_directory_is_created_private(shared_tmp):
    path = _ipc.runtime_dir()
    assert path == os.path.join(shared_tmp, f'subactor-{os.getuid()}')
    assert mode(path) == 0o700
    assert _ipc.runtime_dir() == path  # found as made: accepted


@pytest.mark.parametrize('pre_mode', [0o777, 0o755], ids=['0777', '0755'])
def test_socket_directory_of_ours_that_others_may_enter_is_refused(shared_tmp, pre_mode):
    path = os.path.join(shared_tmp, f'subactor-{os.getuid()}')
    os.mkdir(path)
    os.chmod(path, pre_mode)
    with pytest.raises(
        PermissionError, match=rf'refusing to use .*subactor-{os.getuid()}.*: its mode is {pre_mode:#o}'
    ):
        _ipc.runtime_dir()
    with pytest.raises(PermissionError, match='other users may enter it'):
        devx.dump_socket_path(os.getpid())  # devx's dump sockets go through the same check


@actor_test(root=False)
async def test_socket_directory_made_by_another_user_is_refused(shared_tmp, start_method):
    # Another user got there first and made the directory world-writable, to swap our socket files.
    path = os.path.join(shared_tmp, f'subactor-{os.getuid()}')
    assert as_nobody(f'import os; os.mkdir({path!r}); os.chmod({path!r}, 0o777)') == 0
    assert os.stat(path).st_uid == NOBODY
    with pytest.raises(PermissionError, match=rf'it is owned by uid {NOBODY}, not by us'):
        async with subactor.open_root_actor(start_method=start_method, transport='uds'):
            pytest.fail('the root must not listen in a directory another user owns')
    # A symlink another user placed there, to a directory of ours, is refused as well.
    shutil.rmtree(path)
    target = tempfile.mkdtemp(prefix='ours-')
    try:
        os.symlink(target, path)
        with pytest.raises(PermissionError, match='not a directory'):
            _ipc.runtime_dir()
    finally:
        os.unlink(path)
        os.rmdir(target)


def test_another_user_cannot_hijack_our_socket_directory(shared_tmp):
    path = _ipc.runtime_dir()
    sock = os.path.join(path, 'root-0123.sock')
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(sock)
        # As nobody: no file can be made in it, our socket cannot be removed or replaced, nor the directory moved.
        script = (
            'import os, sys\n'
            'def denied(fn, *args):\n'
            '    try:\n'
            '        fn(*args)\n'
            '    except PermissionError:\n'
            '        return True\n'
            '    return False\n'
            f'ok = denied(open, {os.path.join(path, "evil.sock")!r}, "w")\n'
            f'ok = denied(os.unlink, {sock!r}) and ok\n'
            f'ok = denied(os.rename, {path!r}, {path + "-moved"!r}) and ok\n'
            f'ok = denied(os.rmdir, {path!r}) and ok\n'
            'sys.exit(0 if ok else 1)\n'
        )
        assert as_nobody(script) == 0
        assert os.path.exists(sock)
        os.unlink(sock)
