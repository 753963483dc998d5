# Speaking the wire protocol by hand, as a peer outside the runtime would (hostile-peer and limit tests).
import os

import trio

from subactor import _auth, _ipc
from subactor._msg import Hello, Proof


async def raw_connect(addr):
    kind, host, port = addr
    if kind == 'tcp':
        return await trio.open_tcp_stream(host, port)
    return await trio.open_unix_socket(host)


async def read_until_eof(stream):
    """Read until the peer closes (a close with our bytes unread resets the connection: that counts too)."""
    try:
        while await stream.receive_some(65536):
            pass
    except trio.BrokenResourceError:
        pass


def client_hello(nonce=None):
    return Hello(['client', 'c0ffee'], os.getpid(), None, None, nonce)


async def challenge(addr):
    """Connect and send a hello with a challenge; (channel, our nonce, the listener's first answer)."""
    chan = await _ipc.connect(addr)
    nonce = _auth.new_nonce()
    await chan.send(client_hello(nonce))
    return chan, nonce, await chan.recv()


async def handshaken(addr, secret, *then):
    """A bare channel to `addr` that has done the connecting side of the handshake with `secret` (the listener's
    proof checked), its proof sent in one write with the messages `then`."""
    chan, nonce, hello = await challenge(addr)
    assert isinstance(hello, Hello), hello
    assert _auth.proof_ok(_auth.listener_proof(secret, nonce, hello.nonce), hello.proof)
    await chan.send_many(Proof(_auth.connector_proof(secret, nonce, hello.nonce)), *then)
    return chan
