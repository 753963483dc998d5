# The runtime's exception types and the boxing of a remote exception into a message and back.
from __future__ import annotations

import builtins
import importlib
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

    `boxed_type` is the remote exception's class when it can be resolved here (builtins or an importable
    module), else None; `boxed_type_str` is always its qualified name. `src_uid` is the actor where it was first
    raised; `relay_uids` lists the actors that passed it on, nearest the source first.
    """

    def __init__(
        self,
        message: str,
        *,
        boxed_type_str: str,
        src_uid: Uid | None,
        tb_str: str = '',
        relay_uids: list[Uid] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.boxed_type_str = boxed_type_str
        self.src_uid = src_uid
        self.tb_str = tb_str
        self.relay_uids = list(relay_uids or [])

    @property
    def boxed_type(self) -> type[BaseException] | None:
        return resolve_type(self.boxed_type_str)

    def __str__(self) -> str:
        src = f'{self.src_uid[0]}' if self.src_uid else '?'
        return f'{self.boxed_type_str}: {self.message} (raised in actor {src!r})'

    def __reduce__(self) -> Any:
        return (_rebuild, (type(self), self.__dict__))


def _rebuild(cls: type[RemoteActorError], state: dict[str, Any]) -> RemoteActorError:
    err = cls.__new__(cls)
    Exception.__init__(err, state.get('message', ''))
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
    """The exception class named `qualname` ('ValueError', 'pkg.mod.Error') if it is importable here."""
    if '.' not in qualname:
        found = getattr(builtins, qualname, None)
        if found is None:
            found = globals().get(qualname)
    else:
        mod_name, _, attr = qualname.rpartition('.')
        try:
            found = getattr(importlib.import_module(mod_name), attr, None)
        except Exception:
            return None
    if isinstance(found, type) and issubclass(found, BaseException):
        return found
    return None


def type_qualname(exc_type: type[BaseException]) -> str:
    mod = exc_type.__module__
    if mod in ('builtins', __name__) or mod.startswith('subactor.'):
        return exc_type.__qualname__
    return f'{mod}.{exc_type.__qualname__}'


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
        )
    return ErrorInfo(
        type_name=type_qualname(type(exc)),
        message=str(exc),
        traceback=''.join(traceback.format_exception(exc)),
        src_uid=list(local_uid),
        relay_uids=[],
        canceller=list(canceller) if canceller else None,
        is_cancel=canceller is not None,
    )


def unpack_error(info: ErrorInfo) -> RemoteActorError:
    """Rebuild the local exception that represents a boxed remote error."""
    cls = ContextCancelled if info.is_cancel else RemoteActorError
    err = cls(
        info.message,
        boxed_type_str=info.type_name,
        src_uid=tuple(info.src_uid) if info.src_uid else None,  # type: ignore[arg-type]
        tb_str=info.traceback,
        relay_uids=[tuple(u) for u in info.relay_uids],  # type: ignore[misc]
    )
    if info.canceller:
        err.__dict__['_canceller'] = tuple(info.canceller)
    return err
