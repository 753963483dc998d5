# An actor's inbound connections: accepting through a shortage of fds, and logging floods once per interval.
#
# Design: the accept loop ends only when its listener is closed. Any other accept error (trio already retries
# the ones that concern a single connection, such as ECONNABORTED) is a shortage of this process's resources,
# EMFILE, ENFILE, ENOBUFS, ENOMEM, which ends as connections close: the loop backs off (doubling from
# ACCEPT_BACKOFF_MIN up to the `accept_backoff_max` bound) and tries again, and it tries again at once when one
# of this actor's inbound channels closes (its fd is free then), so nothing waits out a whole backoff for an fd
# this actor itself released. The connections that arrive meanwhile wait in the kernel's backlog.
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import trio

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
        self._logger.log(self._level, msg, *args)
        return True


class Inbound:
    """The state of one actor's inbound side: the accept loop's troubles and the flood logs."""

    def __init__(self, actor: Actor) -> None:
        self._actor = actor
        interval = actor.bounds.flood_log_interval
        self.log_accept_error = FloodLog(log, logging.ERROR, interval)
        self.log_dropped = FloodLog(log, logging.WARNING, interval)
        # Times accept failed (introspection: tests and dumps); woken on each failure.
        self.accept_errors = 0
        self.accept_failed = trio.lowlevel.ParkingLot()
        # Woken whenever an inbound channel of this actor closes: its fd is free for the next accept.
        self._fd_released = trio.lowlevel.ParkingLot()

    def channel_closed(self) -> None:
        self._fd_released.unpark_all()

    async def wait_accept_error(self) -> None:
        """Wait until accept has failed at least once."""
        while not self.accept_errors:
            await self.accept_failed.park()

    async def accept_loop(self, listener: Any, serve: Any) -> None:
        """Accept on `listener` until it is closed, starting `serve(stream)` for each connection."""
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
            serve(stream)
