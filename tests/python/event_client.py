"""Subscribes to change events and reports what arrived; used by the event tests.

Usage: event_client.py DEVICE_URL ATTRIBUTE PUSHES [--push COMMAND] [--no-unsubscribe] [--wait S]
With --push, calls COMMAND PUSHES times (each pushes one event); otherwise waits for PUSHES events
(polling). Prints {"pid": ..., "received": [values...], "errors": n}.
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
    parser.add_argument("--push")
    parser.add_argument("--no-unsubscribe", action="store_true")
    parser.add_argument("--wait", type=float, default=10.0)
    parser.add_argument("--pause", type=float, default=0.0, help="seconds between pushes")
    args = parser.parse_args()

    device = tango.DeviceProxy(args.url)
    received, errors = [], [0]
    done = threading.Event()

    def on_event(event):
        if event.err:
            errors[0] += 1
            return
        received.append(event.attr_value.value)
        # The first event after subscribing carries the current value.
        if len(received) >= args.count + (1 if args.push else 0):
            done.set()

    sub = device.subscribe_event(args.attribute, tango.EventType.CHANGE_EVENT, on_event)
    if args.push:
        for _ in range(args.count):
            device.command_inout(args.push)
            if args.pause:
                time.sleep(args.pause)
    done.wait(args.wait)
    if not args.no_unsubscribe:
        device.unsubscribe_event(sub)
        # ZMQ cancels the subscription from its I/O thread; give it the moment a real client has.
        time.sleep(0.5)
    print(json.dumps({"pid": os.getpid(), "received": received, "errors": errors[0]}), flush=True)
    if args.no_unsubscribe:
        os._exit(0)


if __name__ == "__main__":
    main()
