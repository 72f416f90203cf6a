"""Many short-lived Tango processes, cheaply: the parent imports tango once and forks them.

Usage:
  churn.py clients URL COUNT PARALLEL
      COUNT client processes, at most PARALLEL at a time; each builds DeviceProxy(URL), runs
      command_inout("Increment") and exits.
  churn.py restarts COUNT
      COUNT times: starts a Demo server (Demo/churn, device test/churn/1, no database) on a fresh
      port, lets one client process call it as above, stops the server by its PID (SIGTERM).
Prints one JSON object: {"clients": [pid, ...], "servers": [pid, ...], "failed": n}.
The parent never starts an ORB: each child starts its own, as a freshly started process would.
"""

import json
import os
import signal
import socket
import sys
import time

import tango


def client_child(url):
    code = 1
    try:
        tango.DeviceProxy(url).command_inout("Increment")
        code = 0
    finally:
        os._exit(code)


def spawn_client(url):
    pid = os.fork()
    if pid == 0:
        client_child(url)
    return pid


def reap(pid):
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def clients(url, count, parallel):
    pids, running, failed = [], [], 0
    for _ in range(count):
        if len(running) >= parallel:
            pid, status = os.wait()
            running.remove(pid)
            failed += os.waitstatus_to_exitcode(status) != 0
        pid = spawn_client(url)
        pids.append(pid)
        running.append(pid)
    for pid in running:
        failed += reap(pid) != 0
    return pids, failed


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(ready, timeout=30.0):
    """Waits for the byte the server writes once its devices are exported (not merely listening)."""
    import select
    readable, _, _ = select.select([ready], [], [], timeout)
    return bool(readable) and os.read(ready, 1) == b"r"


def restarts(count):
    from demo_server import Demo

    servers, client_pids, failed = [], [], 0
    for _ in range(count):
        port = free_port()
        ready, announce = os.pipe()
        server = os.fork()
        if server == 0:
            os.close(ready)
            code = 1
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            try:
                Demo.run_server(args=["churn", "-nodb", "-dlist", "test/churn/1",
                                      "-ORBendPoint", f"giop:tcp:127.0.0.1:{port}"],
                                post_init_callback=lambda: os.write(announce, b"r"))
                code = 0
            finally:
                os._exit(code)
        os.close(announce)
        servers.append(server)
        up = wait_ready(ready)
        os.close(ready)
        if not up:
            failed += 1
            os.kill(server, signal.SIGTERM)
            reap(server)
            continue
        pid = spawn_client(f"tango://127.0.0.1:{port}/test/churn/1#dbase=no")
        client_pids.append(pid)
        failed += reap(pid) != 0
        os.kill(server, signal.SIGTERM)
        reap(server)
    return client_pids, servers, failed


def main():
    mode, *args = sys.argv[1:]
    if mode == "clients":
        url, count, parallel = args[0], int(args[1]), int(args[2])
        pids, failed = clients(url, count, parallel)
        out = {"clients": pids, "servers": [], "failed": failed}
    else:
        pids, servers, failed = restarts(int(args[0]))
        out = {"clients": pids, "servers": servers, "failed": failed}
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
