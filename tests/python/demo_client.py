"""A PyTango client used by the integration tests: runs the named steps against Demo devices.

Usage: demo_client.py DEVICE_URL [PEER_DEVICE_URL] STEP [STEP ...]
Prints one JSON object: {"pid": ..., "steps": {"name": "ok" | "DevFailed:<reason>"}}.
"""

import json
import os
import sys
import time

import tango


def main():
    url, *rest = sys.argv[1:]
    peer = rest.pop(0) if rest and rest[0].startswith("tango://") else None
    device = tango.DeviceProxy(url)
    outcome = {}
    steps = {
        "read_attribute": lambda: device.read_attribute("temperature"),
        "read_attributes": lambda: device.read_attributes(["temperature", "counter"]),
        "write_attribute": lambda: device.write_attribute("counter", 7),
        "command_inout": lambda: device.command_inout("Echo", "hello"),
        "increment": lambda: device.command_inout("Increment"),
        "fail": lambda: device.command_inout("Fail", "BoomReason"),
        "nested": lambda: device.command_inout("ReadPeer", peer),
        "ping": lambda: device.ping(),
        # Keeps the connection open past the daemon's next look at the ring buffer (100 ms).
        "pause": lambda: time.sleep(0.5),
    }
    for name in rest:
        try:
            steps[name]()
            outcome[name] = "ok"
        except tango.DevFailed as error:
            outcome[name] = "DevFailed:" + error.args[0].reason
    print(json.dumps({"pid": os.getpid(), "steps": outcome}), flush=True)


if __name__ == "__main__":
    main()
