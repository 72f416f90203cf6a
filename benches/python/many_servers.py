"""Many device servers with many devices, each device called once, held until told to stop.

Usage: many_servers.py SERVERS DEVICES
Starts SERVERS Demo servers (no database, each on its own port) of DEVICES devices each
(`test/mem<server>/<device>`), then calls every device once (`read_attribute("temperature")`)
from one client process per server, so that a tracer sees every device in use. Prints one JSON
line {"servers": [pid, ...], "clients": [pid, ...], "devices": n, "failed": n} and keeps the
servers running until it gets SIGTERM; then stops them by PID.
The parent imports tango once and forks every process; it never starts an ORB itself.
"""

import json
import os
import select
import signal
import socket
import sys
import time

# The demo device class lives with the test servers.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "python"))

import tango  # noqa: E402
from demo_server import Demo  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(index, devices):
    port = free_port()
    names = [f"test/mem{index}/{d}" for d in range(1, devices + 1)]
    ready, announce = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(ready)
        code = 1
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        try:
            Demo.run_server(args=[f"mem{index}", "-nodb", "-dlist", ",".join(names),
                                  "-ORBendPoint", f"giop:tcp:127.0.0.1:{port}"],
                            post_init_callback=lambda: os.write(announce, b"r"))
            code = 0
        finally:
            os._exit(code)
    os.close(announce)
    readable, _, _ = select.select([ready], [], [], 60.0)
    up = bool(readable) and os.read(ready, 1) == b"r"
    os.close(ready)
    return pid, port, names, up


def call_all(port, names):
    """One client process calling every device of one server once."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            for name in names:
                tango.DeviceProxy(f"tango://127.0.0.1:{port}/{name}#dbase=no").read_attribute("temperature")
            code = 0
        finally:
            os._exit(code)
    return pid


def main():
    count, devices = int(sys.argv[1]), int(sys.argv[2])
    servers, clients, failed = [], [], 0
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    for index in range(1, count + 1):
        pid, port, names, up = start_server(index, devices)
        servers.append(pid)
        if not up:
            failed += len(names)
            continue
        client = call_all(port, names)
        clients.append(client)
        _, status = os.waitpid(client, 0)
        failed += os.waitstatus_to_exitcode(status) != 0
    print(json.dumps({"servers": servers, "clients": clients, "devices": count * devices,
                      "failed": failed}), flush=True)
    while not stopping:
        time.sleep(0.2)
    for pid in servers:
        os.kill(pid, signal.SIGTERM)
    for pid in servers:
        os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
