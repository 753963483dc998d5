# Peer authentication: the actor tree's secret and the HMAC challenge-response that opens every connection.
#
# The root actor makes a random secret (or takes the caller's: open_root_actor(secret=...), or the file named by
# SUBACTOR_SECRET_FILE, which must be a private file of ours, for trees on several hosts or programs sharing a
# registrar). Each parent hands it to its children in the SpawnSpec, over the private channel the backend made
# for the spawn (a socketpair, or a one-shot 0600 socket in the private runtime directory): never in argv or
# the environment, and never over a connection that a listener accepted.
#
# Handshake on a connection to a listener, mutual and in the messages it already had (no extra round trip for
# the connecting side, whose first request may follow its proof at once):
#   connector -> listener  Hello(nonce=Nc)
#   listener  -> connector Hello(nonce=Ns, proof=HMAC(secret, 'listener' | Nc | Ns))
#   connector -> listener  Proof(HMAC(secret, 'connector' | Ns | Nc))
# The connector checks the listener's proof before it sends its own (a listener without the secret learns
# nothing it could answer another actor with); the listener reads nothing else from the connection before the
# connector's proof checks out. Each side's proof covers a nonce the other just chose, and the roles differ, so a
# proof can be neither replayed nor reflected. The transport is not encrypted: this keeps other local users (and
# other trees) out, it does not hide traffic from whoever can read it.
from __future__ import annotations

import hmac
import os
import secrets
import stat

NONCE_BYTES = 16
SECRET_BYTES = 32
# The shortest secret accepted from a caller or a file.
MIN_SECRET_BYTES = 16
SECRET_FILE_ENV = 'SUBACTOR_SECRET_FILE'

_LISTENER = b'subactor-listener\0'
_CONNECTOR = b'subactor-connector\0'


def new_nonce() -> bytes:
    return secrets.token_bytes(NONCE_BYTES)


def listener_proof(secret: bytes, connector_nonce: bytes, listener_nonce: bytes) -> bytes:
    return hmac.digest(secret, _LISTENER + connector_nonce + listener_nonce, 'sha256')


def connector_proof(secret: bytes, connector_nonce: bytes, listener_nonce: bytes) -> bytes:
    return hmac.digest(secret, _CONNECTOR + listener_nonce + connector_nonce, 'sha256')


def proof_ok(expected: bytes, given: object) -> bool:
    return isinstance(given, bytes) and hmac.compare_digest(expected, given)


def tree_secret(secret: bytes | str | None) -> bytes:
    """The root's secret: `secret` when given, else the file named by SUBACTOR_SECRET_FILE, else a new random one."""
    if secret is None:
        path = os.environ.get(SECRET_FILE_ENV)
        if not path:
            return secrets.token_bytes(SECRET_BYTES)
        secret = read_secret_file(path)
    if isinstance(secret, str):
        secret = secret.encode()
    if not isinstance(secret, bytes) or len(secret) < MIN_SECRET_BYTES:
        raise ValueError(
            f'an actor tree secret must be at least {MIN_SECRET_BYTES} bytes (bytes or str), not '
            f'{type(secret).__name__} of length {len(secret) if isinstance(secret, (bytes, str)) else "?"}; '
            'make one with secrets.token_bytes(32)'
        )
    return secret


def read_secret_file(path: str) -> bytes:
    """The secret in `path` (surrounding whitespace stripped), which must be a regular file of ours that no one
    else may read or write, as ssh and Erlang's cookie require."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
            raise PermissionError(
                f'refusing the secret file {path!r} ({SECRET_FILE_ENV}): it must be a regular file of ours (uid '
                f'{os.getuid()}) with mode 0600 or stricter, not uid {info.st_uid} mode '
                f'{stat.S_IMODE(info.st_mode):#o}'
            )
        with os.fdopen(os.dup(fd), 'rb') as f:
            return f.read().strip()
    finally:
        os.close(fd)
