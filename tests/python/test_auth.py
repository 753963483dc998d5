# Peer authentication: only a peer that proves it knows the actor tree's secret gets anything served.
import hashlib
import logging
import os
import re
import subprocess
import sys
import textwrap

import pytest
import trio

import subactor
from actors import basic, guarded
from subactor import _auth, _discovery, _ipc
from subactor._msg import CancelActor, Error, Hello, Proof, Return, Start
from subactor.testing import actor_test
from wire import challenge, client_hello, handshaken

RECORD = Start('1', 'actors.guarded', 'record', {'tag': 'intruder'}, 'run')


async def refused(chan, *msgs):
    """Send `msgs` on `chan`; the listener must answer with exactly one AuthenticationError, then close."""
    if msgs:
        try:
            await chan.send_many(*msgs)
        except subactor.TransportClosed:
            pass  # closed already: its error may still be waiting to be read
    answer = await chan.recv()
    assert isinstance(answer, Error), answer
    assert answer.info.type_name == 'AuthenticationError'
    assert "did not prove it knows this actor tree's secret" in answer.info.message
    with pytest.raises(subactor.TransportClosed):
        await chan.recv()
    await chan.aclose()


def lines(caplog, text):
    return [r for r in caplog.records if text in r.getMessage()]


async def intrusions(addr, msg):
    """Try `msg` on `addr` in every way a peer without the secret could: no challenge at all, no proof, a proof
    made with another secret."""
    chan = await _ipc.connect(addr)
    await refused(chan, client_hello(), msg)
    chan, _, hello = await challenge(addr)
    assert isinstance(hello, Hello)
    await refused(chan, msg)
    chan, nonce, hello = await challenge(addr)
    await refused(chan, Proof(_auth.connector_proof(os.urandom(32), nonce, hello.nonce)), msg)


@actor_test(enable_modules=['actors.guarded'])
async def test_unauthenticated_peer_cannot_call_an_enabled_function(caplog):
    root = subactor.current_actor()
    caplog.set_level(logging.WARNING, logger='subactor')
    await intrusions(root.listen_addr, RECORD)
    assert guarded.calls == []
    # The victim logged one line for the three (more within flood_log_interval are counted, not logged).
    assert len(lines(caplog, "did not prove it knows this actor tree's secret")) == 1
    # With the secret: served.
    chan = await handshaken(
        root.listen_addr, root.secret, Start('2', 'actors.guarded', 'record', {'tag': 'ok'}, 'run')
    )
    assert await chan.recv() == Return('2', 1)
    await chan.aclose()
    assert guarded.calls == ['ok']
    guarded.calls.clear()


@actor_test
async def test_unauthenticated_peer_cannot_cancel_the_root_or_a_child():
    root = subactor.current_actor()
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('child', enable_modules=['actors.basic', 'actors.guarded'])
        async with subactor.find_actor('child') as found:
            child_addr = found.channel.peer_listen_addr
        for addr in (root.listen_addr, child_addr):
            await intrusions(addr, CancelActor('9', 0.0))
        assert not root._cancel_called
        assert await portal.run(guarded.cancel_called) is False
        assert await portal.run(basic.add, a=1, b=2) == 3
        async with subactor.find_actor('root') as found:
            assert found.channel.peer_uid == root.uid
        await portal.cancel_actor()


@actor_test
async def test_unauthenticated_peer_cannot_register_with_the_registrar():
    root = subactor.current_actor()
    bogus = Start(
        '1',
        'subactor._discovery',
        'register_actor',
        {'name': 'bogus', 'uid': ['bogus', 'b0'], 'addr': ['tcp', '127.0.0.1', 1]},
        'run',
    )
    await intrusions(root.listen_addr, bogus)
    assert 'bogus' not in root.registry
    async with subactor.find_actor('bogus') as found:
        assert found is None
    # A peer of the tree can.
    chan = await handshaken(root.listen_addr, root.secret, bogus)
    assert await chan.recv() == Return('1', None)
    await chan.aclose()
    assert 'bogus' in root.registry
    await _discovery.unregister(root, ('bogus', 'b0'))


@actor_test
async def test_connecting_to_a_listener_without_the_secret_is_an_authentication_error():
    # Something listens where an actor was (a stale registry entry): it answers the hello, but cannot prove.
    root = subactor.current_actor()
    listener = await _ipc.listen(('tcp', '127.0.0.1', 0))
    async with trio.open_nursery() as n:

        async def impostor():
            stream = await listener.accept()
            chan = _ipc.Channel(stream)
            hello = await chan.recv()
            await chan.send(Hello(['impostor', '1'], os.getpid(), None, None, os.urandom(16), os.urandom(32)))
            # Nothing but the end of the connection follows: no proof of ours is handed to an impostor.
            with pytest.raises(subactor.TransportClosed):
                await chan.recv()
            await chan.aclose()
            assert isinstance(hello, Hello)

        n.start_soon(impostor)
        with pytest.raises(
            subactor.AuthenticationError,
            match=re.escape(f"peer at {listener.addr!r} did not prove it knows this actor tree's secret"),
        ):
            await root.connect(listener.addr)
    await listener.aclose()


SECOND_PROGRAM = textwrap.dedent(
    """
    import sys
    import trio
    import subactor

    async def main(addr):
        async with subactor.open_root_actor(name='other', start_method='trio') as me:
            try:
                chan = await me.connect(addr)
            except subactor.AuthenticationError as exc:
                print('refused:', exc)
                return
            portal = subactor.Portal(chan, me)
            print('answered:', await portal.run_from_ns('actors.basic', 'add', a=20, b=22))
            await chan.aclose()

    trio.run(main, ('tcp', '127.0.0.1', int(sys.argv[1])))
    """
)


def run_second_program(port, secret_file=None):
    env = {k: v for k, v in os.environ.items() if k != _auth.SECRET_FILE_ENV}
    env['PYTHONPATH'] = os.pathsep.join(p for p in sys.path if p)
    if secret_file is not None:
        env[_auth.SECRET_FILE_ENV] = str(secret_file)
    out = subprocess.run(
        [sys.executable, '-c', SECOND_PROGRAM, str(port)], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.slow
@actor_test(root=False)
async def test_another_program_needs_the_tree_secret(tmp_path, start_method):
    secret_file = tmp_path / 'cookie'
    secret_file.write_bytes(os.urandom(32).hex().encode() + b'\n')
    secret_file.chmod(0o600)
    os.environ[_auth.SECRET_FILE_ENV] = str(secret_file)
    try:
        async with subactor.open_root_actor(
            start_method=start_method, enable_modules=['actors.basic']
        ) as root:
            assert root.secret == secret_file.read_bytes().strip()
            port = root.listen_addr[2]
            # Its own random secret: refused, with the reason.
            out = await trio.to_thread.run_sync(run_second_program, port)
            assert (
                "refused: peer at ('tcp', '127.0.0.1'" in out
                and "did not prove it knows this actor tree's secret" in out
            )
            # The same secret file: served.
            out = await trio.to_thread.run_sync(run_second_program, port, secret_file)
            assert 'answered: 42' in out
    finally:
        del os.environ[_auth.SECRET_FILE_ENV]


def test_a_secret_file_others_may_read_is_refused(tmp_path, monkeypatch):
    secret_file = tmp_path / 'cookie'
    secret_file.write_bytes(os.urandom(32))
    secret_file.chmod(0o644)
    monkeypatch.setenv(_auth.SECRET_FILE_ENV, str(secret_file))
    with pytest.raises(
        PermissionError, match=r'refusing the secret file .* mode 0600 or stricter, not uid \d+ mode 0o644'
    ):
        _auth.tree_secret(None)
    with pytest.raises(ValueError, match='at least 16 bytes'):
        _auth.tree_secret(b'short')


@pytest.mark.parametrize('method', ['trio', 'mp_spawn', 'mp_forkserver', 'forkserver'])
@actor_test(root=False)
async def test_the_secret_is_not_in_a_childs_argv_or_environment(method):
    async with subactor.open_root_actor(start_method=method) as root, subactor.open_nursery() as an:
        portal = await an.start_actor('child', enable_modules=['actors.basic', 'actors.guarded'])
        pid = await portal.run(basic.pid)
        assert pid != os.getpid()
        # The child has it (it answers its peers' challenges)...
        assert await portal.run(guarded.secret_digest) == hashlib.sha256(root.secret).hexdigest()
        # ...but not where other processes could read it.
        for name in ('cmdline', 'environ'):
            exposed = await trio.Path(f'/proc/{pid}/{name}').read_bytes()
            for form in (root.secret, root.secret.hex().encode()):
                assert form not in exposed, f"the secret is in the child's {name}"
        await portal.cancel_actor()
