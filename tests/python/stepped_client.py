"""A client that connects first and calls later, when told: its connection predates whatever the
test starts in between (a tracer, for instance).

Usage: stepped_client.py DEVICE_URL
Reads `temperature` once (which opens the connection) and prints {"pid": ..., "calls": 1}; then for
each line N on standard input reads it N more times on the same DeviceProxy and prints
{"pid": ..., "calls": <total>}; exits when standard input is closed.
"""

import json
import os
import sys

import tango


def main():
    device = tango.DeviceProxy(sys.argv[1])
    device.read_attribute("temperature")
    calls = 1
    print(json.dumps({"pid": os.getpid(), "calls": calls}), flush=True)
    for line in sys.stdin:
        for _ in range(int(line)):
            device.read_attribute("temperature")
            calls += 1
        print(json.dumps({"pid": os.getpid(), "calls": calls}), flush=True)


if __name__ == "__main__":
    main()
