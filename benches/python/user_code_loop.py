"""Benchmark client of the user-level span costs: read_attributes of N attributes in a loop.

Usage: user_code_loop.py URL N CALLS [--warmup W]
Reads `n0` … `n<N-1>` of tests/python/user_code_server.py with one read_attributes per call:
W untimed calls, then CALLS timed ones. Prints one JSON object:
  {"pid", "calls", "attributes_per_call", "seconds", "cpu_s", "calls_per_s"}
"""

import argparse
import json
import os
import time

import tango


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("attributes", type=int)
    parser.add_argument("calls", type=int)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()
    device = tango.DeviceProxy(args.url)
    names = [f"n{i}" for i in range(args.attributes)]
    read = device.read_attributes
    for _ in range(args.warmup):
        read(names)
    cpu_start = time.process_time()
    start = time.perf_counter()
    for _ in range(args.calls):
        read(names)
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "pid": os.getpid(),
                "calls": args.calls,
                "attributes_per_call": args.attributes,
                "seconds": seconds,
                "cpu_s": time.process_time() - cpu_start,
                "calls_per_s": args.calls / seconds,
            }
        )
    )


if __name__ == "__main__":
    main()
