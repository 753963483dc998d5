# Remote functions with a visible effect, to show whether an (unauthenticated) peer got to call them.
import hashlib

import subactor

calls = []


def record(tag):
    calls.append(tag)
    return len(calls)


def recorded():
    return list(calls)


def secret_digest():
    """A digest of this actor's tree secret (the secret itself stays here)."""
    return hashlib.sha256(subactor.current_actor().secret).hexdigest()


def cancel_called():
    return subactor.current_actor()._cancel_called
