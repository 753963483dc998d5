# An actor's inbound connections: accepting through a shortage of fds, their handshake, the bounds on what
# peers can make the actor hold, and logging floods once per interval.
#
# Design: the accept loop ends only when its listener is closed. Any other accept error (trio already retries
# the ones that concern a single connection, such as ECONNABORTED) is a shortage of this process's resources,
# EMFILE, ENFILE, ENOBUFS, ENOMEM, which ends as connections close: the loop backs off (doubling from
# ACCEPT_BACKOFF_MIN up to the `accept_backoff_max` bound) and tries again, and it tries again at once when one
# of this actor's inbound channels closes (its fd is free then), so nothing waits out a whole backoff for an fd
# this actor itself released. The connections that arrive meanwhile wait in the kernel's backlog.
#
# Memory (Bounds fields): before its handshake is done a connection may send only small frames
# (handshake_max_frame) and at most max_pending_handshakes such connections exist at once (one more is closed
# on accept); the partially received frames of all the actor's channels share one budget (max_buffered_bytes);
# a peer's channel may park at most max_parked_calls registrar calls. What a peer can cause at will (a dropped
# or refused connection, a bad frame before the handshake) is logged once per flood_log_interval.
from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import trio

from . import _auth, _ipc
from ._errors import AuthenticationError, TransportClosed, pack_error
from ._msg import Error, Hello, Proof

if TYPE_CHECKING:
    from ._actor import Actor

log = logging.getLogger('subactor')

# The first wait after a failed accept (seconds); each failure in a row doubles it, up to accept_backoff_max.
ACCEPT_BACKOFF_MIN = 0.005


class FloodLog:
    """Log one kind of event at most once per `interval` seconds; the next line says how many were not logged
    meanwhile. For events a peer can cause at will (a connection that never says hello, a refused one)."""

    __slots__ = ('_interval', '_level', '_logger', '_next', '_suppressed')

    def __init__(self, logger: logging.Logger, level: int, interval: float) -> None:
        self._logger = logger
        self._level = level
        self._interval = interval
        self._next = 0.0
        self._suppressed = 0

    def __call__(self, msg: str, *args: Any) -> bool:
        """Log `msg % args` unless a line of this kind went out less than the interval ago; whether it did."""
        now = time.monotonic()
        if now < self._next:
            self._suppressed += 1
            return False
        if self._suppressed:
            msg += ' (and %d more like it in the last %.0f s, not logged)'
            args = (*args, self._suppressed, self._interval)
            self._suppressed = 0
        self._next = now + self._interval
        self._logger.log(self._level, msg, *args, stacklevel=2)
        return True


class Inbound:
    """The state of one actor's inbound side: the accept loop's troubles and the flood logs."""

    def __init__(self, actor: Actor) -> None:
        self._actor = actor
        interval = actor.bounds.flood_log_interval
        self.log_accept_error = FloodLog(log, logging.ERROR, interval)
        self.log_dropped = FloodLog(log, logging.WARNING, interval)
        self.log_refused = FloodLog(log, logging.WARNING, interval)
        self.log_bad_frame = FloodLog(_ipc.log, logging.ERROR, interval)
        self.log_parked = FloodLog(log, logging.WARNING, interval)
        self.log_unauthenticated = FloodLog(log, logging.WARNING, interval)
        # Every channel this actor reads charges its partial frames here.
        self.buffers = _ipc.BufferBudget(int(actor.bounds.max_buffered_bytes))
        # Inbound connections accepted whose handshake is not done.
        self.pending = 0
        # Registrar calls parked per peer channel.
        self.parked: dict[_ipc.Channel, int] = {}
        # Times accept failed (introspection: tests and dumps); woken on each failure.
        self.accept_errors = 0
        self.accept_failed = trio.lowlevel.ParkingLot()
        # Woken whenever an inbound channel of this actor closes: its fd is free for the next accept.
        self._fd_released = trio.lowlevel.ParkingLot()

    @contextlib.contextmanager
    def parking(self, chan: _ipc.Channel | None) -> Iterator[None]:
        """A registrar call from `chan`'s peer parks (waits for a change) for the block; refused (RuntimeError)
        when that peer already has max_parked_calls parked. `chan` None: a local call, not counted."""
        if chan is None:
            yield
            return
        parked = self.parked.get(chan, 0)
        limit = int(self._actor.bounds.max_parked_calls)
        if parked >= limit:
            self.log_parked(
                '%r: refusing a registrar call from %r: %d of its calls are parked already (max_parked_calls)',
                self._actor,
                chan,
                parked,
            )
            raise RuntimeError(
                f'this peer already has {parked} registrar calls waiting (wait_for_actor) in actor '
                f'{self._actor.name!r}, the most one peer may (Bounds.max_parked_calls={limit}); wait for '
                'fewer actors at once'
            )
        self.parked[chan] = parked + 1
        try:
            yield
        finally:
            left = self.parked[chan] - 1
            if left:
                self.parked[chan] = left
            else:
                del self.parked[chan]

    def channel_closed(self) -> None:
        self._fd_released.unpark_all()

    async def wait_accept_error(self) -> None:
        """Wait until accept has failed at least once."""
        while not self.accept_errors:
            await self.accept_failed.park()

    async def accept_loop(self, listener: _ipc.Listener) -> None:
        """Accept on `listener` until it is closed, serving each connection in the actor's service nursery."""
        actor = self._actor
        delay = 0.0
        while True:
            try:
                stream = await listener.accept()
            except trio.ClosedResourceError:
                log.debug('%r: listener closed', actor)
                return
            except OSError as exc:
                if listener.closed:
                    return
                self.accept_errors += 1
                self.accept_failed.unpark_all()
                delay = min(max(2 * delay, ACCEPT_BACKOFF_MIN), actor.bounds.accept_backoff_max)
                self.log_accept_error(
                    '%r: accept failed on %r: %s; connections wait in the backlog, retrying within %.3f s '
                    '(and whenever one of our connections closes)',
                    actor,
                    listener.addr,
                    exc,
                    delay,
                )
                with trio.move_on_after(delay):
                    await self._fd_released.park()
                continue
            delay = 0.0
            if self.pending >= actor.bounds.max_pending_handshakes:
                stream.socket.close()
                self.log_refused(
                    '%r: refusing an inbound connection: %d connections have not finished their handshake '
                    '(max_pending_handshakes)',
                    actor,
                    self.pending,
                )
                continue
            try:
                actor.service.start_soon(self._serve, _ipc.Channel(stream, label='inbound'))
            except RuntimeError:  # the actor stopped serving meanwhile
                stream.socket.close()
                return
            self.pending += 1

    async def _serve(self, chan: _ipc.Channel) -> None:
        actor = self._actor
        try:
            try:
                await self._handshake(chan)
            except AuthenticationError as exc:
                self.log_unauthenticated('%r: closed an inbound connection: %s', actor, exc)
                return
            except (TransportClosed, trio.TooSlowError) as exc:
                self.log_dropped('%r: dropping an inbound connection without a handshake: %s', actor, exc)
                return
            finally:
                self.pending -= 1
            await actor.serve_channel(chan)
        finally:
            # Nobody else holds an inbound channel: release its socket with its reader (also when cancelled).
            await chan.aclose()
            self.channel_closed()

    async def _handshake(self, chan: _ipc.Channel) -> None:
        """The listener's side (see _auth.py): the peer's hello and challenge, our hello with our answer and
        challenge, the peer's answer. Until it is done the peer may send only small frames, a bad one is logged
        as part of a flood, and nothing it sends is acted on. AuthenticationError when the peer does not prove it
        knows the tree's secret: it is told so, and the connection closes."""
        actor = self._actor
        chan.charge_to(self.buffers)
        chan.log_protocol_error = self.log_bad_frame
        chan.limit_handshake(
            int(actor.bounds.handshake_max_frame), 2, ' before the handshake (Bounds.handshake_max_frame)'
        )
        with trio.fail_after(actor.bounds.handshake_timeout):
            hello = await chan.recv()
            if not isinstance(hello, Hello):
                raise TransportClosed(f'expected a hello, got {type(hello).__name__}')
            if isinstance(hello.nonce, bytes) and len(hello.nonce) == _auth.NONCE_BYTES:
                nonce = _auth.new_nonce()
                await chan.send(actor.hello(nonce, _auth.listener_proof(actor.secret, hello.nonce, nonce)))
                answer = await chan.recv()
                expected = _auth.connector_proof(actor.secret, hello.nonce, nonce)
                if isinstance(answer, Proof) and _auth.proof_ok(expected, answer.proof):
                    actor.accept_hello(chan, hello)
                    chan.end_handshake()
                    chan.log_protocol_error = _ipc.log.error
                    return
            await self._refuse(chan, hello)

    async def _refuse(self, chan: _ipc.Channel, hello: Hello) -> None:
        """Tell an unauthenticated peer why it is refused (best effort) and raise AuthenticationError."""
        actor = self._actor
        peer = chan.peer_description()
        told = AuthenticationError(
            f"peer at {peer} did not prove it knows this actor tree's secret; actor {actor.name!r} closed the "
            'connection without reading anything else from it: only actors of its tree (or programs given its '
            'secret: open_root_actor(secret=...) or SUBACTOR_SECRET_FILE) may connect'
        )
        with trio.move_on_after(actor.bounds.task_cancel_timeout):
            try:
                await chan.send(Error(None, pack_error(told, local_uid=actor.uid)))
            except TransportClosed:
                pass
        raise AuthenticationError(
            f'peer at {peer} (claiming to be {hello.uid!r}, pid {hello.pid!r}) did not prove it knows this actor '
            "tree's secret; nothing it sent was acted on"
        )
