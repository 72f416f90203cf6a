"""A client whose connection to a device exists before the tracer starts.

Usage: tcp_position_client.py DEVICE_URL BEFORE AFTER
Reads `temperature` BEFORE times (the connection opens), prints {"pid", "connected": true}, waits
for a line on its standard input, then reads it AFTER more times on the same connection and
prints {"pid", "calls": AFTER}.
"""

import json
import os
import sys

import tango


def main():
    url, before, after = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    device = tango.DeviceProxy(url)
    for _ in range(before):
        device.read_attribute("temperature")
    print(json.dumps({"pid": os.getpid(), "connected": True}), flush=True)
    sys.stdin.readline()
    for _ in range(after):
        device.read_attribute("temperature")
    print(json.dumps({"pid": os.getpid(), "calls": after}), flush=True)


if __name__ == "__main__":
    main()
