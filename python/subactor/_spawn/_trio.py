# The `trio` backend: each child actor is a fresh `python -m subactor._child` process, linked by a socketpair.
from __future__ import annotations

import collections
import contextlib
import os
import socket
import subprocess
import sys
from typing import TYPE_CHECKING

import trio

from .._ipc import Channel, channel_from_socket
from ._base import Child, child_env, terminate_then_kill

if TYPE_CHECKING:
    from .._config import Bounds

_TAIL_LINES = 40


class ProcessChild(Child):
    """A child actor running in its own OS process."""

    def __init__(self, proc: trio.Process, bounds: Bounds, name: str = '?') -> None:
        self.proc = proc
        self.name = name
        self.pid = proc.pid
        self._bounds = bounds
        self._tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)

    async def wait(self) -> int | None:
        return await self.proc.wait()

    def exited(self) -> bool:
        return self.proc.returncode is not None

    async def hard_kill(self) -> None:
        if not self.exited():
            await terminate_then_kill(self.proc, self.proc.wait, self._bounds.terminate_timeout, self.name)

    def kill_now(self) -> None:
        if not self.exited():
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    def failure_detail(self) -> str:
        return ''.join(self._tail)

    async def pump_output(self) -> None:
        """Forward the child's stderr to ours, keeping the tail for error reports."""
        if self.proc.stderr is not None:
            await forward_stderr(self.proc.stderr, self._tail)

    def cleanup(self) -> None:
        if self.proc.stderr is not None:
            self.proc.stderr.close()  # type: ignore[attr-defined]  # a trio FdStream, which has close()


async def forward_stderr(stream: trio.abc.ReceiveStream, tail: collections.deque[str]) -> None:
    """Copy a child's stderr pipe to our sys.stderr line by line until EOF, keeping the last lines in `tail`."""
    out = sys.stderr
    pending = b''
    try:
        while True:
            data = await stream.receive_some(65536)
            if not data:
                break
            pending += data
            *lines, pending = pending.split(b'\n')
            for line in lines:
                text = line.decode(errors='replace') + '\n'
                tail.append(text)
                out.write(text)
    except (trio.ClosedResourceError, trio.BrokenResourceError):
        pass
    if pending:
        tail.append(pending.decode(errors='replace'))
        out.write(pending.decode(errors='replace') + '\n')


async def spawn_process(
    uid: tuple[str, str], method: str, bounds: Bounds, argv_prefix: list[str] | None = None
) -> tuple[Child, Channel]:
    """Start `python -m subactor._child` with one end of a fresh socketpair as its channel."""
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        fd = child_sock.fileno()
        argv = [
            *(argv_prefix or [sys.executable]),
            '-m',
            'subactor._child',
            '--fd',
            str(fd),
            '--name',
            uid[0],
            '--uuid',
            uid[1],
            '--method',
            method,
        ]
        proc = await trio.lowlevel.open_process(
            argv,
            pass_fds=(fd,),
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=child_env(),
            start_new_session=False,
        )
    except BaseException:
        parent_sock.close()
        raise
    finally:
        child_sock.close()
    return ProcessChild(proc, bounds, uid[0]), channel_from_socket(parent_sock, label='child')


def available() -> tuple[bool, str | None]:
    if not hasattr(os, 'fork') and sys.platform != 'win32':
        return False, 'this platform cannot start subprocesses'
    return True, None
