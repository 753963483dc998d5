# Resource limits under hostile or careless peers: an actor keeps serving through fd exhaustion and floods.
import logging
import socket
import struct

import pytest
import trio

import subactor
from actors import basic, limits
from subactor import _discovery, _ipc
from subactor._msg import Return, Start
from subactor.testing import actor_test
from wire import handshaken, raw_connect, read_until_eof


@actor_test(root=False)
async def test_listener_keeps_accepting_after_running_out_of_fds():
    # A process child (its fd limit is its own, whatever backend the suite runs on) with little room for fds;
    # a flood of connections fills it and makes accept fail with EMFILE. Once the flood goes, the listener
    # must serve a fresh connection (it used to stop accepting for good at the first failure).
    async with subactor.open_root_actor(start_method='trio'), subactor.open_nursery() as an:
        portal = await an.start_actor('squeezed', enable_modules=['actors.limits', 'actors.basic'])
        async with subactor.find_actor('squeezed') as found:
            addr = found.channel.peer_listen_addr
        await portal.run(limits.lower_fd_limit, headroom=8)
        flood = [await trio.open_tcp_stream(addr[1], addr[2]) for _ in range(40)]
        with trio.fail_after(10):
            assert await portal.run(limits.wait_accept_error) >= 1
        for stream in flood:
            await stream.aclose()
        with trio.fail_after(10):
            async with subactor.find_actor('squeezed') as found:
                assert await found.run(basic.add, a=1, b=2) == 3
        await portal.cancel_actor()


def records(caplog, text):
    return [r for r in caplog.records if text in r.getMessage()]


@actor_test(bounds={'handshake_max_frame': 512}, enable_modules=['actors.basic'])
async def test_frame_over_the_handshake_limit_closes_that_connection(caplog):
    root = subactor.current_actor()
    caplog.set_level(logging.WARNING, logger='subactor')
    raw = await raw_connect(root.listen_addr)
    await raw.send_all(struct.pack('>I', 513) + b'\x00' * 513)
    await read_until_eof(raw)
    await raw.aclose()
    assert records(caplog, 'frame of 513 bytes exceeds the limit of 512 bytes before the handshake')
    # A proof with a large request written right behind it is served (the limit is the handshake's).
    big = 'x' * 100_000
    chan = await handshaken(
        root.listen_addr, root.secret, Start('1', 'actors.basic', 'echo', {'value': big}, 'run')
    )
    reply = await chan.recv()
    assert isinstance(reply, Return) and reply.value == big
    await chan.aclose()


@actor_test(bounds={'max_pending_handshakes': 3})
async def test_connections_past_the_pending_handshake_bound_are_closed(caplog):
    root = subactor.current_actor()
    caplog.set_level(logging.WARNING, logger='subactor')
    silent = [await raw_connect(root.listen_addr) for _ in range(3)]
    extra = await raw_connect(root.listen_addr)
    with trio.fail_after(5):
        await read_until_eof(extra)  # closed at once, not after the handshake timeout
    await extra.aclose()
    assert records(caplog, '3 connections have not finished their handshake (max_pending_handshakes)')
    for stream in silent:
        await stream.send_eof()
        await read_until_eof(stream)  # the root has dropped it: its slot is free
        await stream.aclose()
    async with subactor.find_actor('root') as portal:
        assert portal.channel.peer_uid == root.uid


@actor_test(root=False)
async def test_partial_frames_of_several_channels_share_one_budget():
    # Two channels of one actor each hold 60 KB of a frame: together past a 100 KB budget. The channel whose
    # read takes the total past it is closed; the other still receives its frame, and gives its share back.
    budget = _ipc.BufferBudget(100_000)
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(2)]
    chans = [_ipc.Channel(trio.SocketStream(trio.socket.from_stdlib_socket(ours))) for ours, _ in pairs]
    for chan in chans:
        chan.charge_to(budget)
    frame = chans[0].encode(Return('1', 'z' * 70_000))
    first, second = chans
    pairs[0][1].sendall(frame[:60_000])
    await first._fill()  # one read takes in everything waiting
    assert budget.used == 60_000
    pairs[1][1].sendall(frame[:60_000])
    with pytest.raises(subactor.TransportClosed):
        await second.recv()
    assert second.closed and budget.used == 60_000
    pairs[0][1].sendall(frame[60_000:])
    assert (await first.recv()).value == 'z' * 70_000
    assert budget.used == 0
    for chan in chans:
        await chan.aclose()
    for _, theirs in pairs:
        theirs.close()


@actor_test(bounds={'max_buffered_bytes': 512 * 1024}, enable_modules=['actors.basic'])
async def test_a_frame_past_the_actors_buffer_budget_closes_its_channel(caplog):
    root = subactor.current_actor()
    caplog.set_level(logging.ERROR, logger='subactor.ipc')
    chan = await handshaken(root.listen_addr, root.secret)
    with pytest.raises(subactor.TransportClosed):  # closed while we send, or once we wait for the answer
        await chan.send(Start('1', 'actors.basic', 'echo', {'value': 'y' * 1_000_000}, 'run'))
        await chan.recv()
    await chan.aclose()
    assert records(caplog, 'past max_buffered_bytes=524288')
    assert root.inbound.buffers.used == 0
    async with subactor.find_actor('root') as portal:  # everyone else is still served
        assert await portal.run(basic.echo, value='ok') == 'ok'


@actor_test(bounds={'max_parked_calls': 3})
async def test_parked_registrar_calls_past_the_bound_are_refused(caplog):
    root = subactor.current_actor()
    caplog.set_level(logging.WARNING, logger='subactor')
    results = []
    refused = []
    async with subactor.find_actor('root') as portal, trio.open_nursery() as n:

        async def wait_for(i):
            try:
                results.append(
                    await portal.run_from_ns('subactor._discovery', 'wait_for_actor_addr', name='late')
                )
            except subactor.RemoteActorError as exc:
                refused.append(exc)
                await _discovery.register(root, ('late', 'abc'), root.listen_addr)  # releases the parked ones

        for i in range(4):
            n.start_soon(wait_for, i)
    assert len(refused) == 1
    assert 'already has 3 registrar calls waiting' in str(refused[0])
    assert 'max_parked_calls=3' in str(refused[0])
    assert results == [list(root.listen_addr)] * 3
    assert records(caplog, '3 of its calls are parked already (max_parked_calls)')
    assert root.inbound.parked == {}


@actor_test
async def test_a_flood_of_dropped_connections_logs_once(caplog):
    root = subactor.current_actor()
    caplog.set_level(logging.WARNING, logger='subactor')
    for _ in range(20):
        raw = await raw_connect(root.listen_addr)
        await raw.send_all(struct.pack('>I', 2**20))
        await read_until_eof(raw)  # the root logged, then closed it
        await raw.aclose()
    # One line per kind for the whole flood (the next one, an interval later, says how many were not logged).
    assert len(records(caplog, 'protocol error on')) == 1
    assert len(records(caplog, 'dropping an inbound connection without a handshake')) == 1
