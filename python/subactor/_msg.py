# The wire protocol: typed msgpack messages (msgspec Structs tagged by kind) and their codec.
from __future__ import annotations

from typing import Any

import msgspec

from ._errors import MessageEncodeError

# A uid travels as [name, uuid-hex]; an address as [transport, host-or-path, port].
UidT = list[str]
AddrT = list[Any]


class Hello(msgspec.Struct, tag='hello', array_like=True):
    """First message on every channel, both directions: who is talking. On a connection to a listener it also
    carries the authentication challenge (`nonce`) and, from the listener, its answer (`proof`): see _auth.py."""

    uid: UidT
    pid: int
    interp_id: int | None = None
    listen_addr: AddrT | None = None
    nonce: bytes | None = None
    proof: bytes | None = None


class Proof(msgspec.Struct, tag='proof', array_like=True):
    """Connector -> listener, right after the listener's hello: the connector's answer to its challenge."""

    proof: bytes


class SpawnSpec(msgspec.Struct, tag='spec', array_like=True):
    """Parent -> child right after the handshake: what the child is and what it may run."""

    parent_uid: UidT
    spawn_method: str
    enable_modules: list[str]
    registry_addr: AddrT | None
    transport: str
    loglevel: str | None
    sys_path: list[str]
    bounds: dict[str, float]
    # The actor tree's secret (see _auth.py): sent only on this private parent-child channel.
    secret: bytes = b''
    # The tree's main module (see _mainmod): ['path', file] or ['name', module] or None, and whether this child
    # may load it (load_main).
    main_module: list[str] | None = None
    load_main: bool = True
    # The root's logging configuration (see _log.wire_config), applied by every actor of the tree.
    log_config: Any = None

    def __repr__(self) -> str:  # never the secret (a spec can end up in an error message or a log)
        fields = ', '.join(f'{f}={getattr(self, f)!r}' for f in self.__struct_fields__ if f != 'secret')
        return f'SpawnSpec({fields}, secret=<{len(self.secret)} bytes>)'


class Ready(msgspec.Struct, tag='ready', array_like=True):
    """Child -> parent once the spec is applied and the child serves requests."""

    listen_addr: AddrT | None


class Start(msgspec.Struct, tag='start', array_like=True):
    """Run `ns.func(**kwargs)` in the receiving actor; `kind` is 'run' (plain call) or 'ctx' (a context)."""

    cid: str
    ns: str
    func: str
    kwargs: dict[str, Any]
    kind: str
    window: int = 0


class Started(msgspec.Struct, tag='started', array_like=True):
    cid: str
    value: Any


class Yield(msgspec.Struct, tag='yield', array_like=True):
    cid: str
    value: Any


class Stop(msgspec.Struct, tag='stop', array_like=True):
    """The sender closed its side of the context's stream."""

    cid: str


class Credit(msgspec.Struct, tag='credit', array_like=True):
    """Stream back-pressure: the receiver grants the sender `n` more messages."""

    cid: str
    n: int
    window: int = 0


class Return(msgspec.Struct, tag='return', array_like=True):
    cid: str
    value: Any


class ErrorInfo(msgspec.Struct, array_like=True):
    type_name: str
    message: str
    traceback: str
    src_uid: UidT | None
    relay_uids: list[UidT]
    canceller: UidT | None = None
    is_cancel: bool = False
    # The original's args and public instance attributes, when msgpack can carry them (RemoteActorError.unwrap).
    args: list[Any] | None = None
    attrs: dict[str, Any] | None = None


class Error(msgspec.Struct, tag='error', array_like=True):
    """A task (cid) or, with cid None, the actor itself failed."""

    cid: str | None
    info: ErrorInfo


class CancelTask(msgspec.Struct, tag='cancel', array_like=True):
    """Ask the receiver to cancel the task serving `cid`; it ends with an Error(is_cancel=True).

    `budget`: seconds the requester waits for that final message; the task fits its teardown (children it
    spawned included) inside it, like an actor does under CancelActor.budget."""

    cid: str
    budget: float | None = None


class CancelActor(msgspec.Struct, tag='cancel-actor', array_like=True):
    """Ask the receiving actor to cancel everything and exit; acknowledged by Return(cid, True).

    `budget`: seconds the requester waits for the exit before it kills the receiver. The receiver tears its own
    subtree down within that budget (see Actor.grace_within_budget), so a kill from above never orphans it.
    """

    cid: str
    budget: float | None = None


class CancelAck(msgspec.Struct, tag='cancel-ack', array_like=True):
    """The receiver's channel reader got the CancelTask or CancelActor `cid`: sent at once, before the request is
    acted on, so a canceller tells a live loop (busy tearing down) from one that does not run (see _cancel.py)."""

    cid: str


Msg = (
    Hello
    | Proof
    | SpawnSpec
    | Ready
    | Start
    | Started
    | Yield
    | Stop
    | Credit
    | Return
    | Error
    | CancelTask
    | CancelActor
    | CancelAck
)

_CID_MSGS = (Started, Yield, Stop, Credit, Return, Error)


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    raise NotImplementedError(f'cannot encode a value of type {type(obj).__qualname__!r}')


_SIZER = msgspec.msgpack.Encoder(enc_hook=_enc_hook)


def encoded_size(value: Any) -> int | None:
    """How many bytes `value` takes in a message, or None if it cannot be sent."""
    try:
        return len(_SIZER.encode(value))
    except (TypeError, msgspec.EncodeError, NotImplementedError, OverflowError, ValueError, RecursionError):
        return None


# Decoding keeps no state between calls, so every channel shares one decoder (building one for the tagged
# union costs ~0.1 ms, a visible share of a warm spawn).
_DECODER: msgspec.msgpack.Decoder[Msg] = msgspec.msgpack.Decoder(Msg)


class Codec:
    """Encodes and decodes `Msg`s; one per channel (msgspec encoders keep a reusable buffer)."""

    def __init__(self) -> None:
        self._enc = msgspec.msgpack.Encoder(enc_hook=_enc_hook)
        self._dec = _DECODER

    def encode(self, msg: Msg) -> bytes:
        try:
            return self._enc.encode(msg)
        except (TypeError, msgspec.EncodeError, NotImplementedError, OverflowError) as exc:
            raise MessageEncodeError(
                f'cannot send {type(msg).__name__.lower()} message: {exc}; send only msgpack-friendly values '
                '(None, bool, int, float, str, bytes, list, tuple, dict, msgspec.Struct)'
            ) from None

    def decode(self, data: bytes | memoryview) -> Msg:
        return self._dec.decode(data)
