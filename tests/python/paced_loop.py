"""A client that calls read_attribute at a steady rate for a while (outage tests).

Usage: paced_loop.py DEVICE_URL CALLS_PER_S SECONDS|stdin
With `stdin` it calls until its standard input is closed. Prints one JSON object:
{"pid": ..., "calls": ..., "failed": ...}.
"""

import json
import os
import sys
import threading
import time

import tango


def main():
    url, rate = sys.argv[1], float(sys.argv[2])
    stopped = threading.Event()
    if sys.argv[3] == "stdin":
        seconds = float("inf")
        threading.Thread(target=lambda: (sys.stdin.read(), stopped.set()), daemon=True).start()
    else:
        seconds = float(sys.argv[3])
    device = tango.DeviceProxy(url)
    calls = failed = 0
    start = time.monotonic()
    while not stopped.is_set():
        now = time.monotonic() - start
        if now >= seconds:
            break
        due = start + calls / rate
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        try:
            device.read_attribute("temperature")
        except tango.DevFailed:
            failed += 1
        calls += 1
    print(json.dumps({"pid": os.getpid(), "calls": calls, "failed": failed}), flush=True)


if __name__ == "__main__":
    main()
