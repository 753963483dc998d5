# The native extension's non-blocking socket calls (send_nowait, recv_nowait): what channels use where it is loaded.
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from subactor import _ipc, _native

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def test_what_is_sent_is_received(pair):
    a, b = pair
    assert _native.send_nowait(a.fileno(), b'hello') == 5
    assert _native.send_nowait(a.fileno(), memoryview(b'xxworld')[2:]) == 5
    assert _native.recv_nowait(b.fileno(), 1 << 16) == b'helloworld'


def test_nothing_to_read_or_no_room_raise_blocking_io_error(pair):
    a, b = pair
    with pytest.raises(BlockingIOError):
        _native.recv_nowait(b.fileno(), 100)  # the socket itself is blocking: the call never is
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    sent = 0
    with pytest.raises(BlockingIOError):
        for _ in range(10_000):
            sent += _native.send_nowait(a.fileno(), b'x' * 65536)
    assert sent > 0
    got = 0
    while got < sent:
        got += len(_native.recv_nowait(b.fileno(), 1 << 20))
    assert got == sent


def test_end_of_stream_reads_empty_and_a_closed_peer_is_an_error_not_a_signal():
    # SIGPIPE back to its default (Python ignores it) in a child: a write to a closed peer must not kill it.
    script = textwrap.dedent(
        """
        import signal, socket
        from subactor import _native
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        a, b = socket.socketpair()
        b.close()
        assert _native.recv_nowait(a.fileno(), 10) == b''
        try:
            _native.send_nowait(a.fileno(), b'x')
        except BrokenPipeError:
            print('EPIPE')
        """
    )
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, 'python'))
    proc = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode != -signal.SIGPIPE, 'killed by SIGPIPE'
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == 'EPIPE'


@pytest.mark.parametrize(
    ('call', 'error', 'message'),
    [
        (lambda: _native.send_nowait(-1, b'x'), ValueError, 'fd must be'),
        (lambda: _native.recv_nowait(-1, 10), ValueError, 'fd must be'),
        (lambda: _native.recv_nowait(0, 0), ValueError, 'max_bytes must be > 0'),
        (lambda: _native.send_nowait(0, 'text'), TypeError, 'incompatible function arguments'),
        (lambda: _native.send_nowait(0, memoryview(b'abcd')[::2]), ValueError, 'contiguous'),
    ],
)
def test_bad_arguments(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_a_bad_fd_is_an_os_error():
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(OSError):
        _native.send_nowait(w, b'x')


def test_channels_use_them_where_the_extension_is_loaded():
    assert _ipc._socket_calls() == (_native.send_nowait, _native.recv_nowait)
