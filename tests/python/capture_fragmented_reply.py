"""Captures a GIOP 1.2 reply that omniORB fragments, for tracer-wire's fixtures.

Usage: capture_fragmented_reply.py PORT DEVICE ECHO_BYTES REQUEST_OUT REPLY_OUT

Sends the captured GIOP 1.2 `command_inout_4("Echo", "over-db")` request (object key set to the
DB-less DEVICE of demo_server.py) with its argument lengthened to about ECHO_BYTES characters;
omniORB answers with a Reply whose "more fragments" flag is set followed by Fragment messages.
Writes the request and the reply's bytes, as read from the socket, to the two files.
"""

import struct
import socket
import sys

from pipelined_client import FIXTURES, rekey


def lengthened_echo(message, extra):
    """The Echo request with `extra` (a multiple of 8) more characters in its argument."""
    old = b"\x08\x00\x00\x00over-db\x00"
    assert extra % 8 == 0 and message.count(old) == 1
    new = struct.pack("<I", 8 + extra) + b"over-db" + b"x" * extra + b"\x00"
    out = bytearray(message.replace(old, new))
    struct.pack_into("<I", out, 8, len(out) - 12)
    return bytes(out)


def main():
    port, device, echo_bytes, request_out, reply_out = sys.argv[1:6]
    request = rekey((FIXTURES / "giop12-req-command_inout_4-echo.bin").read_bytes(), device.encode())
    request = lengthened_echo(request, int(echo_bytes) // 8 * 8)
    with socket.create_connection(("127.0.0.1", int(port))) as sock:
        sock.sendall(request)
        reply = bytearray()
        at = 0
        while True:
            while len(reply) < at + 12:
                reply += sock.recv(65536)
            (body_len,) = struct.unpack_from("<I", reply, at + 8)
            while len(reply) < at + 12 + body_len:
                reply += sock.recv(65536)
            more_fragments = reply[at + 6] & 0x02
            at += 12 + body_len
            if not more_fragments:
                break
    open(request_out, "wb").write(request)
    open(reply_out, "wb").write(bytes(reply[:at]))


if __name__ == "__main__":
    main()
