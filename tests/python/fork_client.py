"""A PyTango process that forks a child process (not a thread) which makes the call and exits.

Usage: fork_client.py DEVICE_URL
Imports tango (loading omniORB) in the parent, forks before any ORB exists, and lets the child read
`temperature`. Prints one JSON object: {"parent": ..., "child": ..., "child_status": ...}.
"""

import json
import os
import sys

import tango


def main():
    url = sys.argv[1]
    child = os.fork()
    if child == 0:
        try:
            tango.DeviceProxy(url).read_attribute("temperature")
            os._exit(0)
        except tango.DevFailed:
            os._exit(3)
    _, status = os.waitpid(child, 0)
    print(json.dumps({"parent": os.getpid(), "child": child, "child_status": status}), flush=True)


if __name__ == "__main__":
    main()
