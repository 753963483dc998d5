# Graceful cancel of a peer: the acknowledgement bound, one shared budget per child, and the waits they bound.
#
# Design. A cancel request (CancelTask for one remote task, CancelActor for a whole actor) used to be answered only
# by its outcome: the task's final message, the actor's exit. A canceller could not tell a peer busy tearing down
# (its finally blocks, its own children) from one whose loop does not run at all (a sync function spinning in its
# dispatcher, a process stopped): it waited out the whole grace either way, and every further request on the same
# peer waited out its own grace again (a cancelled portal.run, then the nursery's cancel: 2 s + 3 s before the kill).
#
# - Acknowledgement. The receiver's channel reader answers a cancel request with CancelAck the moment it reads it,
#   before acting on it (one reader per channel, which never blocks: the ack goes out without awaiting). A loop
#   that runs acknowledges within milliseconds; one that does not acknowledge within `cancel_ack_timeout` of the
#   request going out is unresponsive, and the canceller escalates at once: it stops waiting for the remote task
#   (the request stays on record, see below), or kills the child. A peer that acknowledged gets its full grace.
# - One budget per child. A request that was not answered in full (no final message) stays on record in its
#   context, kept on the channel (`Context.lingering`) until a late acknowledgement or final message arrives. The
#   actor's cancel that follows reads the record: a request still unacknowledged past the bound means the peer is
#   still unresponsive (kill now, no second wait); an acknowledged but unfinished one started the budget, so the
#   actor's grace counts from that request, not from now (shared, not summed).
# - Teardown at scale. `an.cancel()` asks every child at once, and ending N children is work the teardown itself
#   queues: N processes exiting on a few cores, or N subinterpreters unwinding one at a time under the GIL they
#   share with the parent (their finalization is already off this path:
#   conc-anal/subint-finalization-off-the-teardown-path.md). A fixed bound from the moment of asking cannot hold
#   for every N (3 s killed all of 500 idle subint actors, and 121 of 200 trio actors on a loaded machine), and
#   a bound that grew with N would be no bound for one stuck child. So each child's grace (`cancel_timeout`)
#   counts from its own acknowledgement (when its request was actually read, however long the queue before it),
#   and a nursery keeps one `TeardownProgress`, the time of the last acknowledgement or exit among its children.
#   Past a child's grace (and past the acknowledgement bound), the wait goes on while that progress is less than
#   `cancel_ack_timeout` old: the children are ending at a steady rate and this one's turn comes. When the
#   teardown stalls for that long, what is left is killed. Every wait stays bounded: each extension needs a new
#   acknowledgement or exit (at most two per child), and none goes past what a canceller of this actor left it
#   (its budget), nor past a strict grace (Ctrl-C's `interrupt_grace`).
# - A starved canceller. When this loop itself did not run for a while (a busy machine; a GIL shared with many
#   child interpreters), a bound expires in the same scheduler pass that delivers the acknowledgement it waited
#   for. Before concluding, a waiter whose bound expired lets that pass finish (one checkpoint) and looks again.
from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from ._context import Context

log = logging.getLogger('subactor')


class TeardownProgress:
    """When the children being cancelled together (one actor nursery's) last showed progress: a cancel request
    acknowledged, a child exited."""

    __slots__ = ('last',)

    def __init__(self) -> None:
        self.last = -math.inf

    def bump(self) -> None:
        self.last = trio.current_time()


async def wait_progressing(
    event: trio.Event,
    deadline: float,
    *,
    progress: TeardownProgress | None = None,
    window: float = 0.0,
    cap: float = math.inf,
) -> bool:
    """Wait for `event` until trio time `deadline` and, past it, for as long as `progress` was shown within the
    last `window` seconds, never past `cap`; whether it is set. Not woken by each sign of progress (N waiters times
    N events): a waiter whose bound expired looks at the last one and sleeps on. A bound that expires is
    re-checked after one checkpoint, so what the same scheduler pass delivered still counts."""

    def bound() -> float:
        extended = deadline if progress is None else max(deadline, progress.last + window)
        return min(extended, cap)

    while not event.is_set():
        until = bound()
        if trio.current_time() >= until:
            await trio.lowlevel.checkpoint()
            if event.is_set() or trio.current_time() >= bound():
                break
            continue
        with trio.move_on_at(until):
            await event.wait()
    return event.is_set()


def unresponsive_request(ctxs: list[Context], ack_timeout: float) -> Context | None:
    """A cancel request among `ctxs` (caller contexts on one channel) still unacknowledged `ack_timeout` after it
    went out: its peer's loop is not running."""
    now = trio.current_time()
    for ctx in ctxs:
        sent = ctx.cancel_sent_at
        if (
            ctx.cancel_pending
            and ctx.cancel_acked_at is None
            and sent is not None
            and now - sent >= ack_timeout
        ):
            return ctx
    return None


def budget_start(ctxs: list[Context]) -> float | None:
    """When the oldest cancel request among `ctxs` that is still unfinished went out: the start of the budget
    that a further cancel of the same peer shares."""
    starts = [ctx.cancel_sent_at for ctx in ctxs if ctx.cancel_pending and ctx.cancel_sent_at is not None]
    return min(starts) if starts else None


def pending_requests(ctxs: dict[str, Context]) -> list[Context]:
    return [ctx for ctx in list(ctxs.values()) if ctx.side == 'caller' and ctx.cancel_pending]
