"""Event benchmark driver: makes a demo_server.py device push COUNT change events.

Usage: bench_event_push.py DEVICE_URL COUNT [--commands]

Calls PushBurst(COUNT) once (the server pushes COUNT change events of `temperature` in a loop), or
with --commands, PushTemperature COUNT times (one push per command round trip). Prints one JSON
object:
  {"pid", "pytango", "count", "start", "end", "server_seconds"}
where start and end are time.monotonic() around the pushing (comparable with other processes' on
Linux) and server_seconds the time the server's push loop took (null with --commands).
"""

import argparse
import json
import os
import time

import tango


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("count", type=int)
    parser.add_argument("--commands", action="store_true")
    args = parser.parse_args()

    device = tango.DeviceProxy(args.url)
    device.set_timeout_millis(300_000)
    device.ping()
    server_seconds = None
    start = time.monotonic()
    if args.commands:
        command = device.command_inout
        for _ in range(args.count):
            command("PushTemperature")
    else:
        server_seconds = device.command_inout("PushBurst", args.count)
    end = time.monotonic()
    result = {
        "pid": os.getpid(),
        "pytango": tango.__version__,
        "count": args.count,
        "start": start,
        "end": end,
        "server_seconds": server_seconds,
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
