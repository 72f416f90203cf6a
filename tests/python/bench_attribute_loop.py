"""Benchmark client: times DeviceProxy.read_attribute(ATTRIBUTE) round trips against any device.

Usage: bench_attribute_loop.py DEVICE ATTRIBUTE CALLS [--warmup N]

DEVICE is a name the client resolves through the database of TANGO_HOST (e.g. sys/tg_test/1) or a
full tango:// URL. WARMUP untimed calls (connection set-up, caches, the tracer adopting this
process), then CALLS timed calls. Works with PyTango 9.3 and 10.x. Prints one JSON object:
  {"pid", "pytango", "calls", "seconds", "cpu_s", "calls_per_s", "p50_us", "p99_us"}
where cpu_s is this process's CPU time (user + system) during the timed calls.
"""

import argparse
import json
import os
import time

import tango


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("device")
    parser.add_argument("attribute")
    parser.add_argument("calls", type=int)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()

    device = tango.DeviceProxy(args.device)
    read, name = device.read_attribute, args.attribute
    for _ in range(args.warmup):
        read(name)
    durations = [0] * args.calls
    clock = time.perf_counter_ns
    cpu_start = time.process_time()
    start = clock()
    for i in range(args.calls):
        before = clock()
        read(name)
        durations[i] = clock() - before
    seconds = (clock() - start) / 1e9
    cpu = time.process_time() - cpu_start
    durations.sort()
    result = {
        "pid": os.getpid(),
        "pytango": tango.__version__,
        "calls": args.calls,
        "seconds": seconds,
        "cpu_s": cpu,
        "calls_per_s": args.calls / seconds,
        "p50_us": durations[len(durations) // 2] / 1e3,
        "p99_us": durations[min(len(durations) - 1, len(durations) * 99 // 100)] / 1e3,
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
