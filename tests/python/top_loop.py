"""Reads every attribute of every device given, in a loop, until its standard input closes.

Usage: top_loop.py DEVICE_URL [DEVICE_URL ...]
Prints one JSON object: {"pid": ..., "reads": {"<url> <attribute>": n, ...}}.
"""

import json
import os
import sys
import threading

import tango

ATTRIBUTES = ("fast_a", "fast_b", "lagging")


def main():
    stopped = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stopped.set()), daemon=True).start()
    devices = [(url, tango.DeviceProxy(url)) for url in sys.argv[1:]]
    reads = {f"{url} {name}": 0 for url, _ in devices for name in ATTRIBUTES}
    while not stopped.is_set():
        for url, device in devices:
            for name in ATTRIBUTES:
                device.read_attribute(name)
                reads[f"{url} {name}"] += 1
    print(json.dumps({"pid": os.getpid(), "reads": reads}), flush=True)


if __name__ == "__main__":
    main()
