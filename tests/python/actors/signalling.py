# Remote functions that tell the test when they reach the point it waits for (one byte on a TCP connection to
# the test's listener at `port`), then misbehave or take their time.
import socket

import trio


def _signal(port):
    with socket.create_connection(('127.0.0.1', port)) as sock:
        sock.sendall(b'x')


def spin_after_signal(port):
    """A sync function: runs in its actor's channel dispatcher, which reads nothing (and so acknowledges no
    cancel request) until it returns; it never does."""
    _signal(port)
    while True:
        pass


async def ignore_cancel_after_signal(port):
    """Its actor's loop runs (cancel requests are acknowledged) but this task never ends."""
    _signal(port)
    with trio.CancelScope(shield=True):
        await trio.sleep_forever()


async def linger_when_cancelled(port, seconds):
    """Healthy but slow to end: once cancelled, its finally block takes `seconds`."""
    _signal(port)
    try:
        await trio.sleep_forever()
    finally:
        with trio.CancelScope(shield=True):
            await trio.sleep(seconds)
