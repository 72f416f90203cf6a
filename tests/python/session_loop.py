"""Reads every attribute of a device a fixed number of times, one round every PERIOD_MS (so a
slow attribute and a fast one load the machine alike), then exits.

Usage: session_loop.py DEVICE_URL ROUNDS PERIOD_MS
Prints one JSON object: {"pid": ..., "reads": {"<attribute>": n, ...}}.
"""

import json
import os
import sys
import time

import tango

ATTRIBUTES = ("fast_a", "fast_b", "lagging")


def main():
    url, rounds, period = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]) / 1000
    device = tango.DeviceProxy(url)
    reads = {name: 0 for name in ATTRIBUTES}
    next_round = time.monotonic()
    for _ in range(rounds):
        for name in ATTRIBUTES:
            device.read_attribute(name)
            reads[name] += 1
        next_round += period
        time.sleep(max(0.0, next_round - time.monotonic()))
    print(json.dumps({"pid": os.getpid(), "reads": reads}), flush=True)


if __name__ == "__main__":
    main()
