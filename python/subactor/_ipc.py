# Channels: length-prefixed msgpack frames over a trio byte stream (TCP, Unix socket or inherited socketpair).
#
# Design: one task reads a channel (the actor's per-channel dispatcher); any number of tasks send, one at a time
# in FIFO order. A frame is a 4-byte big-endian length then the payload. Encoding happens before a sender waits
# its turn, so an unencodable value fails in the sender and leaves the channel usable. A malformed or oversized frame is a
# protocol error: it closes that one channel (every waiter wakes with TransportClosed), never the process.
# `abort()` is synchronous so a parent giving up on a child can wake every task parked on its channel at once
# (conc-anal/orphaned-channel-after-hard-kill.md).
#
# Scheduling: a send is a cancel point every time, and a schedule point at least every `send_yield_interval`
# (a Bounds field): back-to-back sends within that interval of the channel's last yield do not yield again.
# A yield is a pass of the scheduler, and under a subinterpreter's shared GIL each pass's I/O poll hands the GIL
# to the peer's thread, so yielding per message moves a stream one message per thread switch; yielding per
# interval moves it in batches. The streak of a task that does not yield is bounded by the interval: the
# channel's last yield cannot be later than the start of the running task's streak (nothing else ran since).
from __future__ import annotations

import errno
import logging
import os
import socket
import struct
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import msgspec
import trio

from ._errors import MessageEncodeError, ProtocolError, TransportClosed
from ._msg import Codec, Msg
from ._rundir import runtime_dir

log = logging.getLogger('subactor.ipc')

_HEADER = struct.Struct('>I')
_PEERCRED = struct.Struct('3i')  # struct ucred: pid, uid, gid
DEFAULT_MAX_FRAME = 64 * 1024 * 1024
_READ_SIZE = 256 * 1024

Addr = tuple[str, str, int]  # ('tcp', host, port) | ('uds', path, 0)
TRANSPORTS = ('tcp', 'uds')

# Set from the actor's Bounds (set_send_yield_interval); the default matches Bounds'.
_send_yield_interval_ns = 100_000


def set_send_yield_interval(seconds: float) -> None:
    """How long back-to-back sends on a channel may go without yielding to the scheduler (this interpreter's
    channels; the actor sets it from its Bounds)."""
    global _send_yield_interval_ns
    if not seconds > 0:
        raise ValueError(f'send_yield_interval must be a positive number of seconds, not {seconds!r}')
    _send_yield_interval_ns = int(seconds * 1e9)


def _socket_calls() -> tuple[Callable[[int, Any], int], Callable[[int, int], bytes]]:
    """(send, recv) for a channel's non-blocking socket: the native extension's, which keep the GIL, where it is
    loaded (every subinterpreter actor and a parent of one: under a shared GIL, a call that lets go of it for a
    syscall that cannot block hands it to the peer's thread mid-burst); os.write/os.read elsewhere."""
    native = sys.modules.get('subactor._native')
    if native is not None:
        return native.send_nowait, native.recv_nowait
    return os.write, os.read


class _WriteTurn:
    """Whose turn it is to write on a channel: one sender at a time, the others in FIFO order, the turn handed
    straight from one to the next (no barging). trio.StrictFIFOLock does the same with per-task ownership
    bookkeeping that costs more than the write it guards; senders here always give the turn back in `finally`."""

    __slots__ = ('_queue', 'busy')

    def __init__(self) -> None:
        self.busy = False
        self._queue = trio.lowlevel.ParkingLot()

    async def wait(self) -> None:
        """Wait for the turn (call only while `busy`); returns owning it. Cancelled, it does not own it: an
        unpark is final, so a task handed the turn always resumes normally."""
        await self._queue.park()

    def give_back(self) -> None:
        if self._queue:
            self._queue.unpark()  # the next sender owns it now: `busy` stays set
        else:
            self.busy = False


class BufferBudget:
    """The bytes of partially received frames that a set of channels (one actor's) hold, and their bound: a
    channel whose buffer takes the total past `limit` is closed as a protocol error."""

    __slots__ = ('limit', 'used')

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0


class Channel:
    """A bidirectional message channel to one peer actor.

    Typical usage:
        chan = await connect(addr)
        await chan.send(msg)
        reply = await chan.recv()
        await chan.aclose()
    """

    def __init__(
        self, stream: trio.SocketStream, *, max_frame: int = DEFAULT_MAX_FRAME, label: str = ''
    ) -> None:
        self._stream = stream
        self._codec = Codec()
        self._send_now, self._recv_now = _socket_calls()
        self._write_turn = _WriteTurn()
        self._yielded_at = 0  # perf_counter_ns when a sender last resumed from a yield in send_frame
        self._buf = bytearray()
        self._ready: deque[Msg] = deque()
        self._max_frame = max_frame
        self._read_size = _READ_SIZE
        # During a handshake (limit_handshake): the next `_small_frames` frames received may not exceed
        # `_small_max` bytes, and reads are that small, until end_handshake().
        self._small_frames = 0
        self._small_max = max_frame
        self._small_note = ''
        self._budget: BufferBudget | None = None
        self._charged = 0  # bytes of self._buf counted in self._budget
        # How a protocol error is logged (an actor logs its unauthenticated peers' errors once per interval).
        self.log_protocol_error: Callable[..., Any] = log.error
        self._closed_reason: str | None = None
        self.label = label
        self.peer_uid: tuple[str, str] | None = None
        self.peer_pid: int | None = None
        self.peer_listen_addr: Addr | None = None
        # Contexts on this channel by cid, both sides' (filled by the actor serving it).
        self.ctxs: dict[str, Any] = {}

    def __repr__(self) -> str:
        peer = self.peer_uid[0] if self.peer_uid else '?'
        state = f' closed: {self._closed_reason}' if self._closed_reason else ''
        return f'<Channel to {peer!r}{" " + self.label if self.label else ""}{state}>'

    @property
    def closed(self) -> bool:
        return self._closed_reason is not None

    def peer_description(self) -> str:
        """Who is at the other end, as the OS tells it: 'host:port', or a Unix socket peer's pid and uid."""
        sock = self._stream.socket
        try:
            if sock.family == socket.AF_UNIX:
                creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
                pid, uid, _gid = _PEERCRED.unpack(creds)
                return f'a unix socket (pid {pid}, uid {uid})'
            host, port = sock.getpeername()[:2]
        except OSError:
            return 'an unknown address'
        return f'{host}:{port}'

    def limit_handshake(self, max_frame: int, frames: int, note: str) -> None:
        """Until `end_handshake()`: the next `frames` frames received may not exceed `max_frame` bytes (a
        protocol error whose text ends with `note`), and reads take at most one such frame, so a peer that has
        not yet proved anything makes this channel buffer little more than that."""
        self._small_frames = frames
        self._small_max = max_frame
        self._small_note = note
        self._read_size = min(_READ_SIZE, max_frame + _HEADER.size)

    def end_handshake(self) -> None:
        self._small_frames = 0
        self._read_size = _READ_SIZE

    def charge_to(self, budget: BufferBudget) -> None:
        """Count this channel's partially received frames in `budget` (see BufferBudget)."""
        if budget is self._budget:
            return
        self._release_charge()
        self._budget = budget

    def encode(self, msg: Msg) -> bytes:
        payload = self._codec.encode(msg)
        if len(payload) > self._max_frame:
            raise MessageEncodeError(
                f'message of {len(payload)} bytes exceeds the channel limit of {self._max_frame} bytes; '
                'stream it in smaller pieces'
            )
        return _HEADER.pack(len(payload)) + payload

    async def send(self, msg: Msg, *, then_park: bool = False) -> None:
        """Send `msg`; a checkpoint. `then_park`: the caller parks (or ends) right after this, and that is its
        schedule point: a write that completes at once is not followed by a yield of its own."""
        frame = self.encode(msg)
        await self.send_frame(frame, then_park=then_park)

    async def send_many(self, *msgs: Msg, then_park: bool = False) -> None:
        """Send `msgs` in order as one write (a peer on another thread of this process wakes once for them)."""
        frames = b''.join([self.encode(msg) for msg in msgs])
        await self.send_frame(frames, then_park=then_park)

    async def send_frame(self, frame: bytes, *, then_park: bool = False) -> None:
        # Every scheduler pass on a round trip's path is latency, and under a subinterpreter's shared GIL so is
        # every pass after the write: the peer's thread, woken by it, waits for the GIL until this loop sleeps.
        # trio's lock and socket each yield once per send; here an uncontended send yields at most once, after
        # the write (none with `then_park`; none within send_yield_interval of the last: see the top of this
        # file), and a contended one waits for its turn in FIFO order.
        if self._closed_reason is not None:
            raise TransportClosed(f'cannot send on {self!r}')
        turn = self._write_turn
        if turn.busy:
            await turn.wait()
        else:
            await trio.lowlevel.checkpoint_if_cancelled()
            turn.busy = True
        try:
            waited = await self._write(frame)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._mark_closed(f'send failed: {exc!r}')
            raise TransportClosed(f'{self!r}: {exc}') from None
        finally:
            turn.give_back()
        if waited:
            self._yielded_at = time.perf_counter_ns()
        elif not then_park and time.perf_counter_ns() - self._yielded_at >= _send_yield_interval_ns:
            await trio.lowlevel.cancel_shielded_checkpoint()
            self._yielded_at = time.perf_counter_ns()

    def send_frame_nowait(self, frame: bytes, nursery: trio.Nursery) -> bool:
        """Send `frame` without awaiting, when no other sender has the turn: written at once if the socket takes it
        all, else finished by a task started in `nursery` that keeps the turn until the frame is out. False when
        the turn is taken (nothing written: the caller sends it the awaiting way). A failed write closes the
        channel, as in send_frame; the reader then sees it closed."""
        turn = self._write_turn
        if turn.busy:
            return False
        sock = self._stream.socket
        if self._closed_reason is not None or sock.fileno() == -1:
            return True  # nothing can go out; whoever reads or sends next gets TransportClosed
        turn.busy = True
        try:
            sent = self._send_now(sock.fileno(), frame)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._mark_closed(f'send failed: {exc!r}')
            turn.give_back()
            return True
        if sent == len(frame):
            turn.give_back()
        else:
            nursery.start_soon(self._finish_frame, frame, sent)
        return True

    async def _finish_frame(self, frame: bytes, sent: int) -> None:
        """Write the rest of a frame `send_frame_nowait` began, holding the turn it took."""
        try:
            await self._write(frame, sent)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._mark_closed(f'send failed: {exc!r}')
        finally:
            self._write_turn.give_back()

    async def _write(self, frame: bytes, sent: int = 0) -> bool:
        """Write all of `frame` (but its first `sent` bytes, already out), waiting for room when the socket is
        full; whether it had to wait. Cancelled part-way through a frame, the channel cannot be used again (the
        peer would read half a frame): it is closed."""
        sock = self._stream.socket
        view = memoryview(frame)[sent:]
        waited = False
        try:
            while view:
                if sock.fileno() == -1:
                    raise trio.ClosedResourceError('the socket was closed')
                try:
                    sent = self._send_now(sock.fileno(), view)
                except BlockingIOError:
                    waited = True
                    await trio.lowlevel.wait_writable(sock)
                    continue
                view = view[sent:]
        except trio.Cancelled:
            if len(view) < len(frame):
                self.abort('cancelled part-way through writing a frame')
            raise
        return waited

    async def recv(self) -> Msg:
        """The next message; raises TransportClosed at EOF, after abort or on a protocol error."""
        while not self._ready:
            if self._closed_reason is not None:
                raise TransportClosed(f'{self!r}')
            await self._fill()
        return self._ready.popleft()

    async def _read(self) -> bytes:
        """The next bytes from the socket, waiting until some arrive; a checkpoint (a read that finds bytes
        waiting yields afterwards, as a send that needs no wait does)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        sock = self._stream.socket
        waited = False
        while True:
            if sock.fileno() == -1:
                raise trio.ClosedResourceError('the socket was closed')
            try:
                data = self._recv_now(sock.fileno(), self._read_size)
                break
            except BlockingIOError:
                waited = True
                await trio.lowlevel.wait_readable(sock)
        if not waited:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return data

    async def _fill(self) -> None:
        try:
            data = await self._read()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._mark_closed(f'receive failed: {exc!r}')
            if self._ready:
                return  # an abort took in the peer's last messages while we waited: those first
            raise TransportClosed(f'{self!r}') from None
        if not data:
            self._mark_closed('peer closed the connection')
            raise TransportClosed(f'{self!r}')
        try:
            self._parse(data)
            if self._budget is not None:
                self._charge(self._budget)
        except ProtocolError as exc:
            self.log_protocol_error('protocol error on %r: %s; closing this channel', self, exc)
            self._mark_closed(f'protocol error: {exc}')
            await self._close_stream()
            if not self._ready:
                raise TransportClosed(f'{self!r}') from exc

    def _parse(self, data: bytes) -> None:
        """Append `data` and decode every whole frame into the ready queue; ProtocolError on a bad frame."""
        buf = self._buf
        buf += data
        pos = 0
        end = len(buf)
        try:
            while end - pos >= 4:
                (size,) = _HEADER.unpack_from(buf, pos)
                if self._small_frames and size > self._small_max:
                    raise ProtocolError(
                        f'frame of {size} bytes exceeds the limit of {self._small_max} bytes{self._small_note}'
                    )
                if size > self._max_frame:
                    raise ProtocolError(f'frame of {size} bytes exceeds the limit of {self._max_frame} bytes')
                if end - pos - 4 < size:
                    break
                frame = memoryview(buf)[pos + 4 : pos + 4 + size]
                try:
                    self._ready.append(self._codec.decode(frame))
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    raise ProtocolError(f'malformed frame: {exc}') from None
                finally:
                    # A decode error's traceback still holds the view; `buf` cannot be resized while it exists.
                    frame.release()
                if self._small_frames:
                    self._small_frames -= 1
                pos += 4 + size
        finally:
            del buf[:pos]

    def _charge(self, budget: BufferBudget) -> None:
        held = len(self._buf)
        budget.used += held - self._charged
        self._charged = held
        if held and budget.used > budget.limit:
            raise ProtocolError(
                f"partially received frames on this actor's channels would hold {budget.used} bytes, past "
                f'max_buffered_bytes={budget.limit} (this channel: {held})'
            )

    def _release_charge(self) -> None:
        if self._budget is not None:
            self._budget.used -= self._charged
            self._charged = 0

    def _mark_closed(self, reason: str) -> None:
        if self._closed_reason is None:
            self._closed_reason = reason
            self._release_charge()
            self._budget = None

    def abort(self, reason: str = 'aborted', *, keep_unread: bool = False) -> None:
        """Close at once, synchronously: every task waiting on this channel wakes with TransportClosed.

        `keep_unread`: first take in what the peer already wrote (it has exited: its last words, such as a boot
        error, are in the socket buffer); those messages are still received before TransportClosed."""
        if not self.closed:
            log.debug('%r aborted: %s', self, reason)
        self._mark_closed(reason)
        sock = self._stream.socket
        if sock.fileno() == -1:
            return
        if keep_unread:
            try:
                while data := os.read(sock.fileno(), _READ_SIZE):  # non-blocking: ends with BlockingIOError
                    self._parse(data)
            except (OSError, ProtocolError):
                pass
        sock.close()

    async def _close_stream(self) -> None:
        with trio.CancelScope(shield=True):
            try:
                await self._stream.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass

    async def aclose(self) -> None:
        self._mark_closed('closed locally')
        await self._close_stream()


# -- addresses, listeners, connections --------------------------------------------------------------------------


def default_bind_addr(transport: str, name: str, uuid: str) -> Addr:
    if transport == 'tcp':
        return ('tcp', '127.0.0.1', 0)
    if transport == 'uds':
        return ('uds', os.path.join(runtime_dir(), f'{name[:40]}-{uuid[:12]}.sock'), 0)
    raise ValueError(f'unknown transport {transport!r}; use one of {", ".join(TRANSPORTS)}')


def as_addr(value: Any) -> Addr:
    """Validate an address from user input or the wire: ('tcp', host, port) or ('uds', path, 0)."""
    try:
        kind, host, port = value
    except (TypeError, ValueError):
        raise ValueError(f"bad address {value!r}: expected ('tcp', host, port) or ('uds', path, 0)") from None
    if kind not in TRANSPORTS or not isinstance(host, str) or not isinstance(port, int):
        raise ValueError(f"bad address {value!r}: expected ('tcp', host, port) or ('uds', path, 0)")
    return (kind, host, port)


class Listener:
    """Accepts channels on one address; removes its Unix socket file on close."""

    def __init__(self, listener: trio.SocketListener, addr: Addr) -> None:
        self._listener = listener
        self.addr = addr

    async def accept(self) -> trio.SocketStream:
        return await self._listener.accept()

    @property
    def closed(self) -> bool:
        return self._listener.socket.fileno() == -1

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            await self._listener.aclose()
        remove_socket_file(self.addr)


def remove_socket_file(addr: Addr | None) -> None:
    if addr and addr[0] == 'uds':
        try:
            os.unlink(addr[1])
        except FileNotFoundError:
            pass


async def listen(addr: Addr) -> Listener:
    kind, host, port = addr
    if kind == 'tcp':
        sock = trio.socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        await sock.bind((host, port))
        sock.listen(128)
        bound = sock.getsockname()
        return Listener(trio.SocketListener(sock), ('tcp', host, bound[1]))
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # the socket file is created 0600
    try:
        await sock.bind(host)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise OSError(exc.errno, f'unix socket {host!r} is in use') from None
        raise
    finally:
        os.umask(old_umask)
    sock.listen(128)
    return Listener(trio.SocketListener(sock), addr)


async def connect(addr: Addr, *, label: str = '') -> Channel:
    kind, host, port = as_addr(addr)
    try:
        if kind == 'tcp':
            stream = await trio.open_tcp_stream(host, port)
        else:
            stream = await trio.open_unix_socket(host)
    except OSError as exc:
        raise TransportClosed(f'cannot connect to {addr!r}: {exc.strerror or exc}') from None
    return Channel(stream, label=label)


def channel_from_fd(fd: int, *, label: str = '') -> Channel:
    """Wrap an inherited connected AF_UNIX socket (one end of a socketpair made by the parent)."""
    sock = socket.socket(fileno=fd)
    return Channel(trio.SocketStream(trio.socket.from_stdlib_socket(sock)), label=label)


def channel_from_socket(sock: socket.socket, *, label: str = '') -> Channel:
    return Channel(trio.SocketStream(trio.socket.from_stdlib_socket(sock)), label=label)
