"""Test client: many Tango requests written back to back in ONE write on one connection.

Usage: pipelined_client.py [ADDRESS:]PORT DEVICE COUNT [--short-sends SERVER_PID | --fork | --half-and-exit
                          | --send-and-close]
                          [--tag-reasons]

Takes two GIOP 1.2 requests captured from a real PyTango client (read_attributes_5 of
`temperature`, command_inout_4 `Fail`), puts DEVICE's object key (a DB-less device) in them,
gives each copy its own request id (odd ids read, even ids fail), writes all COUNT requests with
one `send`, and reads every reply while writing. With --short-sends the socket is non-blocking
and the server (the test's own child, SERVER_PID) is held with SIGSTOP until a send has failed
with EAGAIN: its receive window fills, so `send` moves only part of the stream (cutting a message
anywhere), then fails, then moves the rest once SIGCONT lets the server read; each request then
carries a 1 KiB filler service context, so that a send holds fewer requests. With --fork a child
process (forked after omniORB is loaded, so only the fork tells a tracer about it) does all this,
a second after its birth; the parent waits for it. With --half-and-exit the client writes the
first half of one request, prints {"pid"} and exits without closing the socket. With
--send-and-close it writes one whole request, closes the socket without reading the reply, prints
{"pid"} and stays alive for two seconds (so that only the close can end its call). With
--tag-reasons each failing command gets its own reason, `B` and the request id in three digits
(`B002`, ...), so that each request's spans can be told apart. The address defaults to
127.0.0.1. Otherwise prints
one JSON object:
  {"pid", "sent_bytes", "stream_bytes", "sends", "eagain", "replies", "wrong_status", "missing_ids"}
where wrong_status counts replies whose status does not fit their request (a read answered with
an exception or a failing command answered normally) and missing_ids requests without a reply.
"""

import json
import os
import select
import signal
import socket
import struct
import sys
import threading
import time
from pathlib import Path

import tango  # noqa: F401  maps omniORB: the tracer adopts this process like any Tango client

FIXTURES = Path(__file__).resolve().parents[2] / "tracer-wire/tests/fixtures/giop"
NO_EXCEPTION, USER_EXCEPTION = 0, 1
# A vendor service context id of no ORB (vendor ids are 20-bit prefixed; this one is unassigned).
FILLER_CONTEXT_ID = 0x54540001
# With --short-sends, each request carries this much filler so that one send holds ~100 requests.
FILLER_BYTES = 1024


def pad(out, alignment):
    out.extend(b"\0" * (-len(out) % alignment))


def rekey(message, key, filler=0):
    """The GIOP 1.2 little-endian Request `message` with object key `key`, alignment kept, and
    with a service context of `filler` bytes (an id no ORB knows: ignored) when filler > 0."""
    # header | u32 request id | octet response flags | 3 reserved | i16 TargetAddress (0: KeyAddr)
    # | octets key | string operation | service contexts | body aligned to 8
    assert message[:6] == b"GIOP\x01\x02" and message[6] & 1 and message[7] == 0, "GIOP 1.2 LE Request"
    (kind,) = struct.unpack_from("<h", message, 20)
    assert kind == 0, "KeyAddr"
    at = 24
    (key_len,) = struct.unpack_from("<I", message, at)
    at += 4 + key_len
    at += -at % 4
    (operation_len,) = struct.unpack_from("<I", message, at)
    operation = message[at:at + 4 + operation_len]
    at += 4 + operation_len
    at += -at % 4
    contexts_start = at
    (contexts,) = struct.unpack_from("<I", message, at)
    at += 4
    for _ in range(contexts):
        at += -at % 4
        (_, data_len) = struct.unpack_from("<II", message, at)
        at += 8 + data_len
    service_contexts = message[contexts_start:at]
    body = message[at + (-at % 8):]

    out = bytearray(message[:24])
    out += struct.pack("<I", len(key)) + key
    pad(out, 4)
    out += operation
    pad(out, 4)
    if filler:
        out += struct.pack("<I", contexts + 1) + service_contexts[4:]
        pad(out, 4)
        out += struct.pack("<II", FILLER_CONTEXT_ID, filler) + b"\xa5" * filler
    else:
        out += service_contexts
    if body:
        pad(out, 8)
        out += body
    struct.pack_into("<I", out, 8, len(out) - 12)
    return bytes(out)


def with_request_id(message, request_id):
    out = bytearray(message)
    struct.pack_into("<I", out, 12, request_id)
    return bytes(out)


def read_replies(sock, count):
    """Request id → reply status of `count` GIOP 1.2 replies."""
    statuses = {}
    pending = bytearray()
    while len(statuses) < count:
        select.select([sock], [], [])
        try:
            # omniORB's own reads are 8 KiB: fewer replies per receive than the per-call limit.
            chunk = sock.recv(8192)
        except BlockingIOError:
            continue
        if not chunk:
            break
        pending += chunk
        while len(pending) >= 12:
            assert pending[:4] == b"GIOP", bytes(pending[:12])
            little = pending[6] & 1
            (body_len,) = struct.unpack_from("<I" if little else ">I", pending, 8)
            if len(pending) < 12 + body_len:
                break
            if pending[7] == 1:
                request_id, status = struct.unpack_from("<II" if little else ">II", pending, 12)
                statuses[request_id] = status
            del pending[:12 + body_len]
    return statuses


def write_in_short_sends(sock, stream, counters, server_pid):
    """Non-blocking sends of whatever fits, until all of `stream` is gone; the server is held
    stopped until the first EAGAIN."""
    view = memoryview(stream)
    os.kill(server_pid, signal.SIGSTOP)
    stopped = True
    while view:
        try:
            moved = sock.send(view)
        except BlockingIOError:
            counters["eagain"] += 1
            if stopped:
                os.kill(server_pid, signal.SIGCONT)
                stopped = False
            select.select([], [sock], [])
            continue
        counters["sends"] += 1
        counters["sent_bytes"] += moved
        view = view[moved:]
    if stopped:
        os.kill(server_pid, signal.SIGCONT)


def with_reason(message, reason):
    """The captured command_inout_4 `Fail` request with its 4-byte argument `Boom` replaced."""
    at = message.rindex(b"Boom\0")
    return message[:at] + reason + message[at + 4:]


def main():
    address, _, port = sys.argv[1].rpartition(":")
    address, port = address or "127.0.0.1", int(port)
    device, count = sys.argv[2].encode(), int(sys.argv[3])
    tagged = "--tag-reasons" in sys.argv
    server_pid = int(sys.argv[5]) if sys.argv[4:5] == ["--short-sends"] else None
    if sys.argv[4:5] == ["--fork"]:
        child = os.fork()
        if child:
            _, status = os.waitpid(child, 0)
            sys.exit(os.waitstatus_to_exitcode(status))
        # Time for a tracer to hear of this process (not a condition of the test: without the
        # tracer, nothing here changes).
        time.sleep(1)
    filler = FILLER_BYTES if server_pid else 0
    read = rekey((FIXTURES / "giop12-req-read_attributes_5.bin").read_bytes(), device, filler)
    fail = rekey((FIXTURES / "giop12-req-command_inout_4-fail.bin").read_bytes(), device, filler)
    if tagged:
        assert count < 1000, "three digits per tag"
        requests = [with_request_id(read if i % 2 else with_reason(fail, b"B%03d" % i), i)
                    for i in range(1, count + 1)]
    else:
        requests = [with_request_id(read if i % 2 else fail, i) for i in range(1, count + 1)]
    stream = b"".join(requests)

    sock = socket.create_connection((address, port))
    if sys.argv[4:5] == ["--half-and-exit"]:
        sock.send(requests[0][:len(requests[0]) // 2])
        print(json.dumps({"pid": os.getpid()}), flush=True)
        os._exit(0)
    if sys.argv[4:5] == ["--send-and-close"]:
        sock.sendall(requests[0])
        sock.close()
        print(json.dumps({"pid": os.getpid()}), flush=True)
        time.sleep(2)
        os._exit(0)
    counters = {"sends": 0, "eagain": 0, "sent_bytes": 0}
    if server_pid:
        # A small, fixed send buffer: what the stopped server cannot take stays short of the stream.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        sock.setblocking(False)
        writer = threading.Thread(target=write_in_short_sends, args=(sock, stream, counters, server_pid))
    else:

        def write_once():
            counters["sent_bytes"] = sock.send(stream)
            counters["sends"] = 1

        writer = threading.Thread(target=write_once)
    # Replies are read meanwhile so neither side's buffers fill up.
    writer.start()
    statuses = read_replies(sock, count)
    writer.join()
    sock.close()

    wrong = sum(
        1 for request_id, status in statuses.items()
        if status != (NO_EXCEPTION if request_id % 2 else USER_EXCEPTION)
    )
    print(json.dumps({
        "pid": os.getpid(),
        "sent_bytes": counters["sent_bytes"],
        "stream_bytes": len(stream),
        "sends": counters["sends"],
        "eagain": counters["eagain"],
        "replies": len(statuses),
        "wrong_status": wrong,
        "missing_ids": count - len(statuses),
    }), flush=True)


if __name__ == "__main__":
    main()
