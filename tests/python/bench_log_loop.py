"""Device-log benchmark driver: makes a log_server.py device log COUNT messages.

Usage: bench_log_loop.py DEVICE_URL COUNT [--rate R]

Raises the device's logging level to DEBUG, then calls LogBurst(COUNT) (the device logs COUNT INFO
messages in a tight loop), or with --rate, LogPaced([COUNT, R]) (R messages per second). Prints
one JSON object: {"pid", "pytango", "count", "server_seconds"} where server_seconds is the time
the device's logging loop took.
"""

import argparse
import json
import os

import tango


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("count", type=int)
    parser.add_argument("--rate", type=float)
    args = parser.parse_args()

    device = tango.DeviceProxy(args.url)
    device.set_timeout_millis(300_000)
    device.set_logging_level(5)
    if args.rate:
        seconds = device.command_inout("LogPaced", [args.count, int(args.rate)])
    else:
        seconds = device.command_inout("LogBurst", args.count)
    print(json.dumps({"pid": os.getpid(), "pytango": tango.__version__, "count": args.count,
                      "server_seconds": seconds}), flush=True)


if __name__ == "__main__":
    main()
