# Faults: boot failures, children dying or killed mid-stream, and garbage on an actor's listening socket.
import logging
import os
import signal
import struct

import pytest
import trio
import trio.testing

import subactor
from actors import basic, streaming
from subactor.testing import actor_test
from wire import handshaken


@actor_test
async def test_boot_failure_raises_actor_failure_with_the_child_traceback():
    async with subactor.open_nursery() as an:
        with pytest.raises(subactor.ActorFailure) as info:
            await an.start_actor('broken', enable_modules=['no_such_module'])
        # The nursery stays usable after a failed spawn.
        portal = await an.start_actor('healthy', enable_modules=['actors.basic'])
        assert await portal.run(basic.add, a=1, b=1) == 2
        await portal.cancel_actor()
    err = info.value
    assert 'broken' in str(err)
    assert 'no_such_module' in str(err)
    assert 'ModuleNotFoundError' in err.stderr_tail
    assert 'Traceback' in err.stderr_tail


# A process child leaves with os._exit(3); a subint child (sharing this process) ends its interpreter with
# SystemExit(3): to the parent both are an actor that vanished mid-call with status 3. sys.exit() in a remote
# task ends the actor with its status on every backend.
@pytest.mark.parametrize(
    ('fn', 'status', 'last_words'),
    [(basic.exit_now, 3, 'exit_now'), (basic.exit_with_sys_exit, 4, 'SystemExit')],
    ids=['exit_now', 'sys_exit_in_a_task'],
)
@actor_test
async def test_child_exiting_unexpectedly_raises_actor_failure(fn, status, last_words):
    with pytest.raises(subactor.ActorFailure) as info:
        async with subactor.open_nursery() as an:
            portal = await an.start_actor('quitter', enable_modules=['actors.basic'])
            with pytest.raises(subactor.TransportClosed):
                await portal.run(fn, code=status)
            await trio.sleep_forever()
    assert info.value.exit_status == status
    assert 'quitter' in str(info.value)
    assert last_words in info.value.stderr_tail


async def _kill_abruptly(portal, pid, nursery):
    """SIGKILL a process child; a subint child cannot be killed alone, so it ends itself abruptly instead."""
    if pid != os.getpid():
        os.kill(pid, signal.SIGKILL)
        return -signal.SIGKILL

    async def exit_in_the_child():
        with pytest.raises(subactor.TransportClosed):
            await portal.run(basic.exit_now, code=9)

    nursery.start_soon(exit_in_the_child)
    return 9


@actor_test(timeout=15)
async def test_child_killed_mid_stream_ends_the_stream_promptly():
    start = None
    with pytest.raises((subactor.ActorFailure, subactor.TransportClosed, ExceptionGroup)) as info:
        async with subactor.open_nursery() as an:
            portal = await an.start_actor('victim', enable_modules=['actors.basic', 'actors.streaming'])
            pid = (await portal.run(basic.whoami))['pid']
            async with (
                trio.open_nursery() as killers,
                portal.open_context(streaming.stream_then_wait) as (ctx, _),
                ctx.open_stream() as stream,
            ):
                assert await stream.receive() == 'first'
                expected_status = await _kill_abruptly(portal, pid, killers)
                start = trio.current_time()
                with pytest.raises(subactor.TransportClosed):
                    await stream.receive()
    assert trio.current_time() - start < 5
    # The context's exit sees the lost channel; the supervisor reports the death too unless the teardown
    # that the body's error started reached the child first.
    failures = info.value.exceptions if isinstance(info.value, BaseExceptionGroup) else [info.value]
    for failure in failures:
        if isinstance(failure, subactor.ActorFailure):
            assert failure.exit_status == expected_status


async def raw_connect(addr):
    kind, host, port = addr
    if kind == 'tcp':
        return await trio.open_tcp_stream(host, port)
    return await trio.open_unix_socket(host)


async def read_until_eof(stream):
    while await stream.receive_some(65536):
        pass


# Every bad connection logs (errors before a handshake are otherwise logged once per flood_log_interval).
@actor_test(bounds={'flood_log_interval': 1e-9})
async def test_garbage_on_the_root_listener_drops_only_that_connection(caplog):
    root = subactor.current_actor()
    caplog.set_level(logging.WARNING, logger='subactor')
    # Before the handshake: an oversized length prefix.
    raw = await raw_connect(root.listen_addr)
    await raw.send_all(struct.pack('>I', 0xFFFFFFFF) + b'xx')
    await read_until_eof(raw)
    await raw.aclose()
    assert 'exceeds the limit' in caplog.text
    # After a valid handshake: a frame that is not msgpack.
    chan = await handshaken(root.listen_addr, root.secret)
    await chan.send_frame(struct.pack('>I', 4) + b'\xc1\xc1\xc1\xc1')
    with pytest.raises(subactor.TransportClosed):
        await chan.recv()
    await chan.aclose()
    assert 'malformed frame' in caplog.text
    # The root still serves.
    async with subactor.find_actor('root') as portal:
        assert portal.peer_uid == root.uid


@actor_test
async def test_garbage_on_a_child_listener_leaves_the_child_serving():
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('target', enable_modules=['actors.basic'])
        async with subactor.find_actor('target') as found:
            addr = found.channel.peer_listen_addr
        # Valid msgpack that is no message, a truncated frame, then a huge length prefix.
        for junk in (struct.pack('>I', 1) + b'\x01', b'\x00\x00', struct.pack('>I', 2**31) + b'\x00' * 16):
            raw = await raw_connect(addr)
            await raw.send_all(junk)
            if len(junk) == 2:
                await raw.send_eof()
            await read_until_eof(raw)
            await raw.aclose()
        assert await portal.run(basic.add, a=40, b=2) == 42
        async with subactor.find_actor('target') as found:
            assert await found.run(basic.add, a=1, b=2) == 3
        await portal.cancel_actor()


@actor_test
async def test_peer_disconnect_mid_call_is_transport_closed_for_the_caller():
    # A portal over a discovery channel that we close under a running call.
    async with subactor.open_nursery() as an:
        portal = await an.start_actor('remote', enable_modules=['actors.basic'])
        async with subactor.find_actor('remote') as found, trio.open_nursery() as n:

            async def call():
                with pytest.raises(subactor.TransportClosed):
                    await found.run(basic.sleep_forever)

            n.start_soon(call)
            await trio.testing.wait_all_tasks_blocked()
            found.channel.abort('test closes it')
        # The child served the dropped call's cancellation and is fine.
        assert await portal.run(basic.add, a=1, b=1) == 2
        await portal.cancel_actor()
