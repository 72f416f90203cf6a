"""Benchmark load: DeviceProxy.read_attribute("temperature") at a fixed rate until SIGTERM.

Usage: paced_read_loop.py DEVICE_URL RATE [PEER]

With PEER, each call is the device's `ReadPeer(PEER)` command instead (the device reads PEER's
temperature while serving it: a nested call).

Call i is due RATE-th seconds after the start times i; a call whose time has come is made at once,
so a loop that fell behind catches up at full speed rather than dropping calls. Prints
`ready` once the DeviceProxy is built, and on SIGTERM or SIGINT, after the call in progress, one
JSON object:
  {"pid", "calls", "seconds", "behind_max_ms"}
where behind_max_ms is how late the latest call ever started after its due time.
"""

import json
import os
import signal
import sys
import time

import tango

stopping = False


def stop(_signum, _frame):
    global stopping
    stopping = True


def main():
    url, rate = sys.argv[1], float(sys.argv[2])
    peer = sys.argv[3] if len(sys.argv) > 3 else None
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    device = tango.DeviceProxy(url)
    print("ready", flush=True)
    if peer is None:
        call = lambda: device.read_attribute("temperature")  # noqa: E731
    else:
        call = lambda: device.command_inout("ReadPeer", peer)  # noqa: E731
    period = 1.0 / rate
    clock = time.monotonic
    start = clock()
    calls, behind_max = 0, 0.0
    while not stopping:
        due = start + calls * period
        now = clock()
        if now < due:
            time.sleep(due - now)
            if stopping:
                break
        else:
            behind_max = max(behind_max, now - due)
        call()
        calls += 1
    result = {
        "pid": os.getpid(),
        "calls": calls,
        "seconds": clock() - start,
        "behind_max_ms": behind_max * 1e3,
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
