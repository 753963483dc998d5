# An actor whose interpreter's finalization waits for the test: it stays 'ending' after the actor is done.
import os


class _BlockFinalization:
    """Freed when the interpreter is finalized (its modules' dicts are cleared), not before: its __del__ then blocks
    until a byte or EOF arrives on `fd`. It keeps what it calls: module globals may be gone by then."""

    def __init__(self, fd):
        self._fd, self._read = fd, os.read

    def __del__(self):
        self._read(self._fd, 1)


_held = []


def block_finalization_on(fd):
    _held.append(_BlockFinalization(fd))
