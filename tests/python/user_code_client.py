"""Drives user_code_server.py for the user-level span tests.

Usage: user_code_client.py URL STEP [STEP ...] — steps, in order:
- `read3`: read_attributes(["fast", "medium", "slow"]);
- `broken`: read_attributes(["fast", "broken"]) (the reply carries broken's error);
- `work`: command Work(1.5); `fail`: command Fail (raises; caught);
- `wait`: sleeps 0.5 s (the polling thread reads `polled` meanwhile);
- `loop:N`: N reads of `fast` with read_attribute (for the cost measurements).
Prints one JSON object: the client's pid and, per step, its wall-clock window (ns).
"""

import json
import os
import sys
import time

import tango


def main():
    url, *steps = sys.argv[1:]
    proxy = tango.DeviceProxy(url)
    windows = []
    for step in steps:
        start = time.time_ns()
        if step == "read3":
            proxy.read_attributes(["fast", "medium", "slow"])
        elif step == "broken":
            proxy.read_attributes(["fast", "broken"])
        elif step == "work":
            proxy.command_inout("Work", 1.5)
        elif step == "fail":
            try:
                proxy.command_inout("Fail")
            except tango.DevFailed:
                pass
        elif step == "wait":
            time.sleep(0.5)
        elif step.startswith("loop:"):
            for _ in range(int(step.split(":")[1])):
                proxy.read_attribute("fast")
        windows.append({"step": step, "start_ns": start, "end_ns": time.time_ns()})
    print(json.dumps({"pid": os.getpid(), "steps": windows}))


if __name__ == "__main__":
    main()
