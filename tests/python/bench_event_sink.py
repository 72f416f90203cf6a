"""Event benchmark subscriber: counts the change events of one attribute.

Usage: bench_event_sink.py DEVICE_URL ATTRIBUTE COUNT [--idle S] [--timeout S]

Subscribes to change events of ATTRIBUTE, prints `subscribed` once the subscription (and its
initial event) is done, then counts events until COUNT have arrived after it, or none came for
IDLE seconds after the first, or TIMEOUT passed. The pushed values go up by one each (demo_server.py
PushBurst), so values skipped between two deliveries are pushes this subscriber missed. Prints one
JSON object:
  {"pid", "pytango", "received", "missed", "errors", "first", "last", "cpu_s"}
where first and last are time.monotonic() of the first and last counted event (comparable with
other processes' on Linux), and cpu_s this process's CPU time from subscribed to the end.
"""

import argparse
import json
import os
import threading
import time

import tango


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("attribute")
    parser.add_argument("count", type=int)
    parser.add_argument("--idle", type=float, default=2.0)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()

    device = tango.DeviceProxy(args.url)
    clock = time.monotonic
    state = {"initial": None, "subscribed": False, "received": 0, "missed": 0, "errors": 0,
             "previous": None, "first": None, "last": None}
    done = threading.Event()

    def on_event(event):
        now = clock()
        if event.err:
            state["errors"] += 1
            return
        value = event.attr_value.value
        if not state["subscribed"]:
            # The initial event, delivered while subscribe_event runs.
            state["initial"] = state["previous"] = value
            return
        if state["first"] is None:
            state["first"] = now
        previous = state["previous"]
        if previous is not None and value > previous + 1:
            state["missed"] += int(round(value - previous - 1))
        state["previous"] = value
        state["last"] = now
        state["received"] += 1
        if state["received"] >= args.count:
            done.set()

    sub = device.subscribe_event(args.attribute, tango.EventType.CHANGE_EVENT, on_event)
    state["subscribed"] = True
    cpu_start = time.process_time()
    print("subscribed", flush=True)
    deadline = clock() + args.timeout
    while not done.wait(0.05):
        now = clock()
        last = state["last"]
        if now > deadline or (last is not None and now - last > args.idle):
            break
    cpu = time.process_time() - cpu_start
    device.unsubscribe_event(sub)
    result = {
        "pid": os.getpid(),
        "pytango": tango.__version__,
        "received": state["received"],
        "missed": state["missed"],
        "errors": state["errors"],
        "first": state["first"],
        "last": state["last"],
        "cpu_s": cpu,
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
