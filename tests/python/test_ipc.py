# IPC units: channel framing over a socketpair, the message codec, error boxing, addresses and bounds.
import contextlib
import logging
import socket
import struct

import pytest
import trio
import trio.testing

import subactor
from subactor import _errors, _ipc, _msg
from subactor._config import Bounds
from subactor.testing import actor_test


def channel_pair(**kwargs):
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return _ipc.Channel(trio.SocketStream(trio.socket.from_stdlib_socket(a)), **kwargs), b


def frame(payload):
    return struct.pack('>I', len(payload)) + payload


SAMPLES = [
    _msg.Hello(['a', '1'], 10, None, ['tcp', '127.0.0.1', 5]),
    _msg.SpawnSpec(['p', '2'], 'trio', ['m'], None, 'uds', None, ['/x'], {'cancel_timeout': 1.0}),
    _msg.Ready(None),
    _msg.Start('c', 'mod', 'fn', {'x': [1, b'2']}, 'run', 4),
    _msg.Started('c', {'v': 1}),
    _msg.Yield('c', 1.5),
    _msg.Stop('c'),
    _msg.Credit('c', 3, -1),
    _msg.Return('c', None),
    _msg.Error(None, _msg.ErrorInfo('ValueError', 'm', 'tb', ['a', '1'], [], None, False)),
    _msg.CancelTask('c'),
    _msg.CancelActor('c'),
    _msg.CancelAck('c'),
]


@actor_test(root=False)
async def test_every_message_kind_round_trips():
    chan, peer = channel_pair()
    peer_chan = _ipc.channel_from_socket(peer)
    for msg in SAMPLES:
        await chan.send(msg)
    assert [await peer_chan.recv() for _ in SAMPLES] == SAMPLES
    await chan.aclose()
    with pytest.raises(subactor.TransportClosed):
        await peer_chan.recv()
    await peer_chan.aclose()


@actor_test(root=False)
async def test_frames_split_and_batched_arbitrarily_are_reassembled():
    chan, peer = channel_pair()
    codec = _msg.Codec()
    data = b''.join(frame(codec.encode(_msg.Yield('c', i))) for i in range(100))
    # Byte by byte for the first frames, then everything else at once.
    for i in range(30):
        peer.send(data[i : i + 1])
        if i % 7 == 0:
            await trio.testing.wait_all_tasks_blocked()
    peer.sendall(data[30:])
    assert [(await chan.recv()).value for _ in range(100)] == list(range(100))
    peer.close()
    with pytest.raises(subactor.TransportClosed):
        await chan.recv()
    assert chan.closed
    await chan.aclose()


@pytest.mark.parametrize(
    ('junk', 'logged'),
    [
        (struct.pack('>I', 2**31), 'exceeds the limit'),
        (frame(b'\xc1'), 'malformed frame'),
        (frame(b'\x01'), 'malformed frame'),
        (frame(b'\x92\xa5hello\x01'), 'malformed frame'),
    ],
)
@actor_test(root=False)
async def test_bad_frame_closes_the_channel_with_a_logged_protocol_error(junk, logged, caplog):
    caplog.set_level(logging.ERROR, logger='subactor.ipc')
    chan, peer = channel_pair()
    good = frame(_msg.Codec().encode(_msg.Stop('before')))
    peer.sendall(good + junk)
    # Messages before the bad frame are still delivered; then the channel is closed.
    assert await chan.recv() == _msg.Stop('before')
    with pytest.raises(subactor.TransportClosed) as info:
        await chan.recv()
    assert 'protocol error' in str(info.value)
    assert chan.closed
    assert logged in caplog.text
    assert 'protocol error' in caplog.text
    # The peer sees the connection closed.
    assert peer.recv(10) == b''
    peer.close()


@actor_test(root=False)
async def test_unencodable_message_fails_before_sending_and_channel_stays_usable():
    chan, peer = channel_pair()
    peer_chan = _ipc.channel_from_socket(peer)

    class Opaque:
        pass

    with pytest.raises(subactor.MessageEncodeError, match='Opaque') as info:
        await chan.send(_msg.Yield('c', Opaque()))
    assert isinstance(info.value, TypeError)
    with pytest.raises(subactor.MessageEncodeError, match='msgpack'):
        await chan.send(_msg.Yield('c', 2**70))
    await chan.send(_msg.Yield('c', 'fine'))
    assert await peer_chan.recv() == _msg.Yield('c', 'fine')
    await chan.aclose()
    await peer_chan.aclose()


@actor_test(root=False)
async def test_oversized_outgoing_message_is_refused():
    chan, peer = channel_pair(max_frame=64)
    with pytest.raises(subactor.MessageEncodeError, match='exceeds the channel limit'):
        await chan.send(_msg.Yield('c', 'x' * 100))
    await chan.send(_msg.Yield('c', 'small'))
    await chan.aclose()
    peer.close()


@actor_test(root=False)
async def test_abort_wakes_every_waiter_and_refuses_sends():
    chan, peer = channel_pair()
    woke = []

    async def waiter():
        with pytest.raises(subactor.TransportClosed):
            await chan.recv()
        woke.append(True)

    async with trio.open_nursery() as n:
        n.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        chan.abort('test')
    assert woke == [True]
    assert 'test' in repr(chan)
    with pytest.raises(subactor.TransportClosed):
        await chan.send(_msg.Stop('c'))
    peer.close()


@actor_test(root=False)
async def test_abort_keeping_unread_delivers_the_peers_last_messages_first():
    """An exited peer's last words (a boot error, a final result) already sit in the socket buffer: an abort
    with keep_unread hands them to the task parked in recv() and to the next one, then TransportClosed."""
    chan, peer = channel_pair()
    codec = _msg.Codec()
    got = []

    async def reader():
        with pytest.raises(subactor.TransportClosed):
            while True:
                got.append(await chan.recv())

    async with trio.open_nursery() as n:
        n.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        peer.sendall(frame(codec.encode(_msg.Return('c1', 1))) + frame(codec.encode(_msg.Return('c2', 2))))
        peer.close()
        chan.abort('peer exited', keep_unread=True)  # before the reader got to run
    assert [m.cid for m in got] == ['c1', 'c2']
    assert 'peer exited' in repr(chan)


@actor_test(root=False)
async def test_plain_abort_drops_what_is_unread():
    chan, peer = channel_pair()
    peer.sendall(frame(_msg.Codec().encode(_msg.Return('c1', 1))))
    chan.abort('gave up')
    with pytest.raises(subactor.TransportClosed):
        await chan.recv()
    peer.close()


@actor_test(root=False)
async def test_send_many_writes_the_messages_in_order_as_one_write():
    chan, peer = channel_pair()
    await chan.send_many(_msg.Stop('a'), _msg.Stop('b'), _msg.Stop('c'))
    peer.setblocking(False)
    data = peer.recv(1 << 16)
    codec = _msg.Codec()
    msgs, pos = [], 0
    while pos < len(data):
        (size,) = struct.unpack_from('>I', data, pos)
        msgs.append(codec.decode(data[pos + 4 : pos + 4 + size]))
        pos += 4 + size
    assert [m.cid for m in msgs] == ['a', 'b', 'c']
    with pytest.raises(subactor.MessageEncodeError):
        await chan.send_many(_msg.Stop('d'), _msg.Yield('e', object()))  # nothing of it is sent
    with pytest.raises(BlockingIOError):
        peer.recv(1 << 16)
    await chan.aclose()
    peer.close()


def _small_buffers(chan, peer):
    chan._stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)


@actor_test(root=False)
async def test_send_is_a_checkpoint_and_then_park_skips_only_the_yield():
    chan, peer = channel_pair()
    peer.setblocking(False)
    with trio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(trio.Cancelled):
            await chan.send(_msg.Stop('never'), then_park=True)  # cancelled before writing
    with pytest.raises(BlockingIOError):
        peer.recv(1 << 16)

    ran: list[str] = []

    async def other_task() -> None:
        ran.append('other task')

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other_task)
        await chan.send(_msg.Stop('b'), then_park=True)
        assert ran == []  # no schedule point: the write went out at once and nothing else ran
        with trio.testing.assert_checkpoints():  # a plain send is a schedule point too (the channel's first)
            await chan.send(_msg.Stop('c'))
    codec = _msg.Codec()
    assert peer.recv(1 << 16) == frame(codec.encode(_msg.Stop('b'))) + frame(codec.encode(_msg.Stop('c')))
    await chan.aclose()
    peer.close()


@actor_test(root=False)
async def test_back_to_back_sends_yield_once_per_interval_and_stay_cancel_points():
    chan, peer = channel_pair()
    peer.setblocking(False)
    received = bytearray()
    turns = 0

    async def bystander() -> None:
        nonlocal turns
        while True:
            turns += 1
            await trio.lowlevel.checkpoint()

    async def burst(n: int) -> int:
        """How often another task ran while `n` sends went out (drained after, so none waits for room)."""
        before = turns
        for i in range(n):
            await chan.send(_msg.Stop(str(i)))
        ran = turns - before
        with contextlib.suppress(BlockingIOError):
            while data := peer.recv(1 << 16):
                received.extend(data)
        return ran

    default = Bounds().send_yield_interval
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(bystander)
            await trio.lowlevel.checkpoint()
            _ipc.set_send_yield_interval(60)
            # Only the first send yields (none had for a minute): the other task runs in the rest of that pass
            # and the next one.
            assert await burst(50) <= 2
            with trio.CancelScope() as scope:
                scope.cancel()
                with pytest.raises(trio.Cancelled):
                    await chan.send(_msg.Stop('never'))  # still a cancel point, yield or not
            _ipc.set_send_yield_interval(1e-9)
            assert await burst(50) >= 49  # each send yields
            nursery.cancel_scope.cancel()
    finally:
        _ipc.set_send_yield_interval(default)
    with pytest.raises(ValueError, match='send_yield_interval'):
        _ipc.set_send_yield_interval(0)
    codec = _msg.Codec()
    assert bytes(received) == b''.join(frame(codec.encode(_msg.Stop(str(i)))) for i in range(50)) * 2
    await chan.aclose()
    peer.close()


@actor_test(root=False)
async def test_the_send_yield_interval_comes_from_the_actors_bounds():
    try:
        async with subactor.open_root_actor(bounds={'send_yield_interval': 0.25}):
            assert _ipc._send_yield_interval_ns == 250_000_000
    finally:
        _ipc.set_send_yield_interval(Bounds().send_yield_interval)


@actor_test(root=False)
async def test_recv_is_a_checkpoint_whether_or_not_it_waits():
    chan, peer = channel_pair()
    codec = _msg.Codec()
    peer.sendall(frame(codec.encode(_msg.Stop('waiting'))))
    with trio.testing.assert_checkpoints():  # the bytes are there: no wait, still a schedule point
        assert (await chan.recv()).cid == 'waiting'
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.to_thread.run_sync, peer.sendall, frame(codec.encode(_msg.Stop('later'))))
        with trio.testing.assert_checkpoints():
            assert (await chan.recv()).cid == 'later'
    await chan.aclose()
    peer.close()


@actor_test(root=False)
async def test_sends_wait_for_room_and_keep_their_order_when_the_socket_is_full():
    chan, peer = channel_pair()
    _small_buffers(chan, peer)
    payloads = [bytes([i]) * 50_000 for i in range(3)]
    peer_chan = _ipc.Channel(trio.SocketStream(trio.socket.from_stdlib_socket(peer)))
    async with trio.open_nursery() as nursery:
        for i, payload in enumerate(payloads):
            nursery.start_soon(chan.send, _msg.Yield(str(i), payload))
            await trio.testing.wait_all_tasks_blocked()  # each queues behind the one before it
        got = [await peer_chan.recv() for _ in payloads]
    assert [(m.cid, m.value) for m in got] == [(str(i), p) for i, p in enumerate(payloads)]
    await chan.aclose()
    await peer_chan.aclose()


@actor_test(root=False)
async def test_a_sender_cancelled_while_waiting_its_turn_neither_writes_nor_holds_up_the_others():
    chan, peer = channel_pair()
    _small_buffers(chan, peer)
    peer_chan = _ipc.Channel(trio.SocketStream(trio.socket.from_stdlib_socket(peer)))
    scopes = [trio.CancelScope() for _ in range(4)]

    async def send(i: int) -> None:
        with scopes[i]:
            await chan.send(_msg.Yield(str(i), bytes([i]) * 50_000))

    async with trio.open_nursery() as nursery:
        for i in range(4):
            nursery.start_soon(send, i)
            await trio.testing.wait_all_tasks_blocked()  # 0 writes (blocked on room), 1-3 wait their turn
        scopes[1].cancel()
        scopes[3].cancel()
        await trio.testing.wait_all_tasks_blocked()
        got = [await peer_chan.recv() for _ in range(2)]
        await chan.send(_msg.Stop('after'))  # the turn is free again: this does not wait
        got.append(await peer_chan.recv())
    assert [m.cid for m in got] == ['0', '2', 'after']
    assert not scopes[0].cancelled_caught and scopes[1].cancelled_caught and scopes[3].cancelled_caught
    await chan.aclose()
    await peer_chan.aclose()


@actor_test(root=False)
async def test_send_frame_nowait_writes_at_once_or_finishes_in_a_task_holding_the_turn():
    chan, peer = channel_pair()
    _small_buffers(chan, peer)
    peer_chan = _ipc.Channel(trio.SocketStream(trio.socket.from_stdlib_socket(peer)))
    small, big = chan.encode(_msg.Stop('small')), chan.encode(_msg.Yield('big', b'x' * 200_000))
    async with trio.open_nursery() as nursery:
        assert chan.send_frame_nowait(small, nursery)  # the socket took it: no task
        assert len(nursery.child_tasks) == 0
        assert chan.send_frame_nowait(big, nursery)  # too big for the socket: a task finishes it
        assert len(nursery.child_tasks) == 1
        assert not chan.send_frame_nowait(small, nursery), 'the turn is held until the big frame is out'
        nursery.start_soon(chan.send, _msg.Stop('after'))  # waits its turn, never splits the big frame
        got = [await peer_chan.recv() for _ in range(3)]
    assert [m.cid for m in got] == ['small', 'big', 'after'] and got[1].value == b'x' * 200_000
    await chan.aclose()
    await peer_chan.aclose()


@actor_test(root=False)
async def test_a_send_cancelled_part_way_through_a_frame_closes_the_channel():
    """The peer must never read half a frame followed by the next one: the channel closes instead."""
    chan, peer = channel_pair()
    _small_buffers(chan, peer)
    with trio.move_on_after(0.05) as scope:
        await chan.send(_msg.Yield('big', b'x' * 1_000_000))  # the peer never reads: blocks part-way
    assert scope.cancelled_caught
    assert chan.closed
    with pytest.raises(subactor.TransportClosed):
        await chan.send(_msg.Stop('next'))
    peer_chan = _ipc.Channel(trio.SocketStream(trio.socket.from_stdlib_socket(peer)))
    with pytest.raises(subactor.TransportClosed):
        await peer_chan.recv()  # a partial frame, then EOF
    await peer_chan.aclose()


def test_error_boxing_round_trip_and_relay():
    try:
        raise KeyError('lost')
    except KeyError as exc:
        info = _errors.pack_error(exc, local_uid=('src', '1'))
    err = _errors.unpack_error(info)
    assert type(err) is subactor.RemoteActorError
    assert err.boxed_type is KeyError
    assert err.src_uid == ('src', '1')
    assert 'raise KeyError' in err.tb_str
    relayed = _errors.unpack_error(_errors.pack_error(err, local_uid=('relay', '2')))
    assert relayed.boxed_type is KeyError
    assert relayed.src_uid == ('src', '1')
    assert relayed.relay_uids == [('relay', '2')]
    cancelled = _errors.unpack_error(
        _errors.pack_error(RuntimeError('x'), local_uid=('a', '1'), canceller=('boss', '9'))
    )
    assert isinstance(cancelled, subactor.ContextCancelled)
    assert cancelled.canceller == ('boss', '9')


def test_error_types_resolve_by_qualified_name():
    assert _errors.resolve_type('ValueError') is ValueError
    assert _errors.resolve_type('ModuleNotExposed') is subactor.ModuleNotExposed
    assert _errors.resolve_type('actors.errors.CustomError').__name__ == 'CustomError'
    assert _errors.resolve_type('no.such.module.Error') is None
    assert _errors.resolve_type('len') is None
    assert _errors.type_qualname(subactor.StreamOverrun) == 'StreamOverrun'


def test_addresses_are_validated():
    assert _ipc.as_addr(['tcp', '127.0.0.1', 1]) == ('tcp', '127.0.0.1', 1)
    for bad in (None, ['tcp', '127.0.0.1'], ['udp', 'h', 1], ['tcp', 1, 1], ['tcp', 'h', '1']):
        with pytest.raises(ValueError, match='bad address'):
            _ipc.as_addr(bad)
    with pytest.raises(ValueError, match='unknown transport'):
        _ipc.default_bind_addr('carrier-pigeon', 'n', 'u')


def test_bounds_validate_and_read_the_environment(monkeypatch):
    with pytest.raises(ValueError, match='cancel_timeout'):
        Bounds(cancel_timeout=0)
    with pytest.raises(ValueError, match='positive'):
        Bounds(handshake_timeout=float('nan'))
    monkeypatch.setenv('SUBACTOR_CANCEL_TIMEOUT', '7.5')
    assert Bounds.from_env().cancel_timeout == 7.5
    assert Bounds.from_env(cancel_timeout=1).cancel_timeout == 1
    monkeypatch.setenv('SUBACTOR_CANCEL_TIMEOUT', 'soon')
    with pytest.raises(ValueError, match='SUBACTOR_CANCEL_TIMEOUT'):
        Bounds.from_env()
