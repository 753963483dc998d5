# Named, configurable bounds: on every wait the runtime makes (seconds), two scheduling choices, and memory.
from __future__ import annotations

import dataclasses
import math
import os

# Of the time a canceller gives an actor (CancelActor.budget): the share its remote tasks get to end (they include
# its nurseries tearing down its children), and the share each further waiting step gets (a remote task's cancel,
# children asked to exit before they are killed). Geometric, so a whole subtree ends inside the first budget.
RPC_SHARE_OF_BUDGET = 0.8
CHILD_SHARE_OF_BUDGET = 0.5


def seconds_from_env(name: str, default: float) -> float:
    """A module-level bound read from the environment variable `name` (unset or empty: `default`); a value
    that is not a number of seconds >= 0 is refused with the variable's name."""
    raw = os.environ.get(name, '')
    if raw == '':
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (0 <= value < math.inf):
        raise ValueError(f'{name} must be a number of seconds >= 0, not {raw!r}')
    return value


@dataclasses.dataclass(frozen=True)
class Bounds:
    """Every bounded wait in the runtime, and the two scheduling bounds (send_yield_interval,
    kill_switch_interval), in seconds; then the bounds on what peers can make an actor hold (bytes, counts). Override per root actor (`open_root_actor(bounds=...)`) or with the
    environment variable SUBACTOR_<FIELD> (e.g. SUBACTOR_CANCEL_TIMEOUT=5); children inherit their parent's."""

    # Spawn: child start-up until its handshake completes.
    handshake_timeout: float = 30.0
    # Graceful cancel: how long a child that acknowledged its cancel request may take to exit before it is
    # killed. Counted from its acknowledgement, or from an earlier cancel request to it still unanswered (one
    # caller's budget per child, shared by a remote task's cancel and the actor's, not summed); extended while
    # the children cancelled with it keep acknowledging or exiting (work the teardown itself queued: see
    # _cancel.py).
    cancel_timeout: float = 3.0
    # Graceful cancel: a healthy actor's channel reader acknowledges a cancel request (CancelTask, CancelActor)
    # the moment it reads it. No acknowledgement within this long of sending the request (again extended while
    # sibling children being cancelled keep showing progress) marks the peer unresponsive and the canceller
    # escalates at once: it stops waiting for the remote task, or kills the child. It is also the longest pause
    # in the progress of a many-child teardown that is tolerated once a child's own grace is over.
    cancel_ack_timeout: float = 0.5
    # Graceful cancel after Ctrl-C (KeyboardInterrupt in a nursery): a short grace before the hard kill.
    interrupt_grace: float = 0.3
    # Remote task cancel: wait for the callee's final message after sending CancelTask (once acknowledged:
    # see cancel_ack_timeout).
    task_cancel_timeout: float = 2.0
    # Process backends: after SIGTERM, wait this long before SIGKILL; then wait for the reap.
    terminate_timeout: float = 1.0
    # Subinterpreter backend, hard kill: wait this long for the child's loop to acknowledge the kill byte (it then
    # aborts its own tasks, finally blocks included) before taking it as busy in Python and injecting exceptions.
    kill_ack_grace: float = 0.02
    # Subinterpreter backend, hard kill: while one runs, a thread waiting for the shared GIL asks its holder to let
    # go after this long (the process's switch interval, normally 5 ms), so each step of the kill gets the GIL
    # from a spinning child, or from a pool interpreter importing meanwhile, without waiting out whole intervals.
    kill_switch_interval: float = 0.001
    # Subinterpreter backend: join after injecting an exception; past this the thread is abandoned.
    interrupt_join_timeout: float = 2.0
    # Subinterpreter backend: times an exception is injected (backing off over interrupt_join_timeout).
    interrupt_attempts: float = 3
    # An actor whose parent channel is lost cancels itself; past this bound it aborts every task, shielded ones
    # too, and (a process) exits after the same bound again: no orphan outlives its parent for long. A process
    # child also exits 2 * this bound after its parent's process ends even if its loop never runs again (spinning
    # or stuck in C): a native watchdog thread, armed at start-up (_entry.py).
    orphan_timeout: float = 2.0
    # Hang dumps (subactor.devx): wait this long for each process child's section of a dump (its own native thread
    # answers, loop or no loop); past it the dump says the child did not answer and goes on without it.
    dump_child_timeout: float = 3.0
    # Root actor: wait for the registrar at `registry_addr` to answer.
    registry_timeout: float = 5.0
    # Not a wait but a bound on not yielding: back-to-back sends on a channel (a stream's sender) go through the
    # scheduler at least this often, so other tasks wait at most this long behind a busy sender. Every send is
    # still a cancel point. Larger moves a stream in bigger batches (fewer thread switches between actors that
    # share a GIL); smaller is fairer.
    send_yield_interval: float = 0.0001
    # Accepting: after an accept fails for want of fds or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM), the listener
    # tries again after a wait that doubles per failure up to this, and at once when one of its connections closes.
    accept_backoff_max: float = 0.5
    # Not a wait: events a peer can cause at will (a connection dropped before its handshake, a failed accept)
    # are logged at most once per this interval, with the count of those not logged.
    flood_log_interval: float = 10.0
    # Not times but sizes and counts: the memory peers can make an actor hold.
    # Bytes: a frame received on an inbound connection before its handshake is done (a hello is ~100 bytes).
    handshake_max_frame: float = 4096
    # Bytes: partially received frames that all of an actor's channels hold together; the channel whose frame
    # takes the total past it is closed. Keep it above one whole frame (64 MiB).
    max_buffered_bytes: float = 256 * 1024 * 1024
    # Inbound connections of an actor that have not finished their handshake; one more is closed at once.
    max_pending_handshakes: float = 256
    # Registrar calls (wait_for_actor) that one peer's channel may have waiting at once; one more is refused.
    max_parked_calls: float = 1000

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, (int, float)) or math.isnan(value) or value <= 0:
                raise ValueError(f'bound {field.name} must be a positive number, not {value!r}')

    @classmethod
    def from_env(cls, **overrides: float) -> Bounds:
        values: dict[str, float] = {}
        for field in dataclasses.fields(cls):
            env = os.environ.get(f'SUBACTOR_{field.name.upper()}')
            if env is not None:
                try:
                    values[field.name] = float(env)
                except ValueError:
                    raise ValueError(f'SUBACTOR_{field.name.upper()}={env!r} is not a number') from None
        values.update(overrides)
        return cls(**values)

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)
