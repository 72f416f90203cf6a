"""A client that calls read_attribute at a steady rate for a while (outage tests).

Usage: paced_loop.py DEVICE_URL CALLS_PER_S SECONDS
Prints one JSON object: {"pid": ..., "calls": ..., "failed": ...}.
"""

import json
import os
import sys
import time

import tango


def main():
    url, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    device = tango.DeviceProxy(url)
    calls = failed = 0
    start = time.monotonic()
    while True:
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
