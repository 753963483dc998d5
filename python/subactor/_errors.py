# The runtime's exception types and the boxing of a remote exception into a message and back.
from __future__ import annotations

import builtins
import traceback
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._msg import ErrorInfo

Uid = tuple[str, str]


class SubactorError(Exception):
    """Base class of every error the runtime raises itself."""


class NoRuntime(SubactorError, RuntimeError):
    """An API that needs an actor was called where no actor runtime is running."""


class RemoteActorError(SubactorError):
    """An exception raised in another actor, carried here with its type name, source and traceback.

    `boxed_type` is the remote exception's class when a module already imported here defines it (builtins, the
    runtime, any module this interpreter imported itself; a peer never makes us import anything), else None;
    `boxed_type_str` is always its qualified name. `src_uid` is the actor where it was first raised;
    `relay_uids` lists the actors that passed it on, nearest the source first. `tb_str` is the remote traceback,
    which a printed traceback of this error shows (as a note), with the relay path.

    `unwrap()` gives an equivalent of the original exception (see there). A remote error whose type is one of
    the runtime's own (ModuleNotExposed, TransportClosed, ...) arrives as a subclass of both this class and that
    one, so `except subactor.ModuleNotExposed` catches it.
    """

    def __init__(
        self,
        message: str,
        *,
        boxed_type_str: str,
        src_uid: Uid | None,
        tb_str: str = '',
        relay_uids: list[Uid] | None = None,
        boxed_args: list[Any] | None = None,
        boxed_attrs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.boxed_type_str = boxed_type_str
        self.src_uid = src_uid
        self.tb_str = tb_str
        self.relay_uids = list(relay_uids or [])
        # The original's args and instance attributes, when they could travel (msgpack-friendly, bounded size).
        self.boxed_args = boxed_args
        self.boxed_attrs = boxed_attrs
        if tb_str:
            self.add_note(
                f'--- remote traceback (actor {self._src_name()!r}{self._relay_text()}) ---\n{tb_str.rstrip()}'
            )

    def _src_name(self) -> str:
        return self.src_uid[0] if self.src_uid else '?'

    def _relay_text(self) -> str:
        if not self.relay_uids:
            return ''
        return ', relayed by ' + ' -> '.join(repr(uid[0]) for uid in self.relay_uids)

    @property
    def boxed_type(self) -> type[BaseException] | None:
        return resolve_type(self.boxed_type_str)

    def unwrap(self) -> BaseException:
        """An equivalent of the original exception: an instance of `boxed_type` with the original's `args` and
        instance attributes, its `__cause__` this error (whose note holds the remote traceback).

        Limits: only for a type already imported here (`boxed_type` is not None; else this error itself is
        returned); only args and attributes msgpack can carry travel (else `args` is `(message,)` and the
        attributes are missing); the class's `__init__` does not run (as with pickle's default for exceptions,
        `__new__` and the attributes rebuild it), so attributes it would compute from other arguments, and those
        kept outside the instance dict (ImportError.name), are missing.
        """
        cls = self.boxed_type
        if cls is None:
            return self
        args = tuple(self.boxed_args) if self.boxed_args is not None else (self.message,)
        try:
            exc = cls.__new__(cls, *args)
            exc.args = args
            for key, value in (self.boxed_attrs or {}).items():
                setattr(exc, key, value)
        except Exception:
            return self
        exc.__cause__ = self
        return exc

    def __str__(self) -> str:
        return f'{self.boxed_type_str}: {self.message} (raised in actor {self._src_name()!r}{self._relay_text()})'

    def __reduce__(self) -> Any:
        return (_rebuild, (type(self), self.__dict__))


def _rebuild(cls: type[RemoteActorError], state: dict[str, Any]) -> RemoteActorError:
    err = cls.__new__(cls)
    BaseException.__init__(err, state.get('message', ''))
    err.__dict__.update(state)
    return err


class ContextCancelled(RemoteActorError):
    """A remote task (a context or a `portal.run` call) ended because it was cancelled.

    `canceller` is the uid of the actor that asked for the cancellation.
    """

    @property
    def canceller(self) -> Uid | None:
        return self.__dict__.get('_canceller')


class ActorFailure(SubactorError):
    """A child actor died before or during its handshake, or while its parent still needed it.

    `exit_status` is its exit code (negative: killed by that signal) or None when it is unknown;
    `stderr_tail` holds the last lines it wrote, typically the traceback that killed it.
    """

    def __init__(self, message: str, *, exit_status: int | None = None, stderr_tail: str = '') -> None:
        super().__init__(message)
        self.exit_status = exit_status
        self.stderr_tail = stderr_tail

    def __str__(self) -> str:
        text = super().__str__()
        if self.stderr_tail:
            text += '\n--- child output (tail) ---\n' + self.stderr_tail.rstrip()
        return text


class ModuleNotExposed(SubactorError, ModuleNotFoundError):
    """A remote call named a module the actor was not started with (`enable_modules`), or no such function."""


class TransportClosed(SubactorError, ConnectionError):
    """The channel to a peer actor closed (peer exit, crash, abort or a protocol error) while in use."""


class AuthenticationError(TransportClosed):
    """A peer did not prove it knows this actor tree's secret in the handshake: the connection was closed before
    any other message was read from it or sent to it."""


class ProtocolError(SubactorError):
    """A peer sent a frame that is not a valid message (malformed, oversized or out of protocol)."""


class StreamOverrun(SubactorError):
    """A stream's bounded receive buffer overflowed: the sender outran the receiver without back-pressure."""


class Lagged(SubactorError):
    """A stream subscriber opened with `max_lag=N` fell more than N messages behind its stream's fastest reader.

    `missed` is how many messages it skipped; its next receive continues with the oldest of the last N."""

    def __init__(self, message: str, *, missed: int) -> None:
        super().__init__(message)
        self.missed = missed


class SpawnMethodUnavailable(SubactorError, RuntimeError):
    """A registered spawn method cannot run on this Python or platform."""


class MessageEncodeError(SubactorError, TypeError):
    """A value could not be encoded into a message; nothing was sent and the channel stays usable."""


def resolve_type(qualname: str) -> type[BaseException] | None:
    """The exception class named `qualname` ('ValueError', 'pkg.mod.Error', 'pkg.mod.Outer.Error') if a module
    already imported in this interpreter defines it. Never imports: the name comes from a peer."""
    from . import _mainmod

    if '.' not in qualname:
        found = getattr(builtins, qualname, None)
        if found is None:
            found = globals().get(qualname)
    else:
        parts = qualname.split('.')
        found = None
        # The longest prefix that names an imported module, then attributes (a nested class) below it.
        for cut in range(len(parts) - 1, 0, -1):
            mod = _mainmod.local_module('.'.join(parts[:cut]))
            if mod is None:
                continue
            found = mod
            for attr in parts[cut:]:
                found = getattr(found, attr, None)
            break
    if isinstance(found, type) and issubclass(found, BaseException):
        return found
    return None


def type_qualname(exc_type: type[BaseException]) -> str:
    from . import _mainmod

    mod = exc_type.__module__
    if mod in ('builtins', __name__) or mod.startswith('subactor.'):
        return exc_type.__qualname__
    return f'{_mainmod.quiet_wire_name(mod)}.{exc_type.__qualname__}'


# Bound on the encoded size of an error's args and attributes: larger ones do not travel (unwrap() goes without).
BOXED_STATE_MAX_BYTES = 64 * 1024


def _boxed_state(exc: BaseException) -> tuple[list[Any] | None, dict[str, Any] | None]:
    """`exc`'s args and public instance attributes if msgpack can carry them within the bound, else None each."""
    from ._msg import encoded_size

    args: list[Any] | None = list(exc.args)
    attrs: dict[str, Any] | None = (
        {k: v for k, v in vars(exc).items() if isinstance(k, str) and not k.startswith('_')}
        if hasattr(exc, '__dict__')
        else {}
    )
    budget = BOXED_STATE_MAX_BYTES
    size = encoded_size(args)
    if size is None or size > budget:
        args = None
    else:
        budget -= size
    size = encoded_size(attrs)
    if size is None or size > budget:
        attrs = None
    return args, attrs


def pack_error(exc: BaseException, *, local_uid: Uid, canceller: Uid | None = None) -> ErrorInfo:
    """Box `exc` (raised in this actor, or relayed through it) for sending to a peer."""
    from ._msg import ErrorInfo

    if isinstance(exc, RemoteActorError):
        # Relay: keep the original type and source, note that we passed it on.
        return ErrorInfo(
            type_name=exc.boxed_type_str,
            message=exc.message,
            traceback=exc.tb_str,
            src_uid=list(exc.src_uid) if exc.src_uid else None,
            relay_uids=[list(u) for u in exc.relay_uids] + [list(local_uid)],
            canceller=list(canceller) if canceller else exc.__dict__.get('_canceller'),
            is_cancel=isinstance(exc, ContextCancelled),
            args=exc.boxed_args,
            attrs=exc.boxed_attrs,
        )
    args, attrs = _boxed_state(exc)
    return ErrorInfo(
        type_name=type_qualname(type(exc)),
        message=str(exc),
        traceback=''.join(traceback.format_exception(exc)),
        src_uid=list(local_uid),
        relay_uids=[],
        canceller=list(canceller) if canceller else None,
        is_cancel=canceller is not None,
        args=args,
        attrs=attrs,
    )


def unpack_error(info: ErrorInfo) -> RemoteActorError:
    """Rebuild the local exception that represents a boxed remote error."""
    if info.is_cancel:
        cls: type[RemoteActorError] = ContextCancelled
    else:
        cls = REMOTE_LOCAL_TYPES.get(info.type_name, RemoteActorError)
    err = cls(
        info.message,
        boxed_type_str=info.type_name,
        src_uid=tuple(info.src_uid) if info.src_uid else None,  # type: ignore[arg-type]
        tb_str=info.traceback,
        relay_uids=[tuple(u) for u in info.relay_uids],  # type: ignore[misc]
        boxed_args=info.args,
        boxed_attrs=info.attrs,
    )
    if info.canceller:
        err.__dict__['_canceller'] = tuple(info.canceller)
    return err


def _remote_twin(local: type[SubactorError]) -> type[RemoteActorError]:
    """RemoteX: a remote error whose type is the runtime's own X, catchable as X and as RemoteActorError."""
    name = f'Remote{local.__name__}'
    twin = type(
        name,
        (RemoteActorError, local),
        {
            '__module__': __name__,
            '__qualname__': name,
            '__doc__': f'A {local.__name__} raised in another actor.',
        },
    )
    globals()[name] = twin  # pickled by reference, like every class here
    return twin


# The runtime's own error types (by the name they travel under) and the class a remote one arrives as. Not
# TransportClosed: a peer's closed channel is not ours, and the runtime takes TransportClosed to mean its own
# channel went away (a remote one stays a plain RemoteActorError with boxed_type TransportClosed).
REMOTE_LOCAL_TYPES: dict[str, type[RemoteActorError]] = {
    local.__qualname__: _remote_twin(local)
    for local in (
        NoRuntime,
        ActorFailure,
        ModuleNotExposed,
        ProtocolError,
        StreamOverrun,
        SpawnMethodUnavailable,
        MessageEncodeError,
    )
}
