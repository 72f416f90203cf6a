"""Benchmark client: times DeviceProxy.read_attribute("temperature") round trips.

Usage: bench_read_loop.py DEVICE_URL CALLS [--warmup N] [--mix]

Without --mix: WARMUP untimed calls (connection set-up, caches, the tracer adopting this
process), then CALLS timed calls. Prints one JSON object:
  {"pid", "pytango", "calls", "seconds", "cpu_s", "calls_per_s", "p50_us", "p99_us"}
where cpu_s is this process's CPU time (user + system) during the timed calls.
With --mix: CALLS operations cycling through reads, writes and commands (the session recorded
for the assembly benchmark); prints {"pid", "pytango", "calls", "seconds"}.
"""

import argparse
import json
import os
import time

import tango


def mixed(device, calls):
    steps = [
        lambda: device.read_attribute("temperature"),
        lambda: device.write_attribute("counter", 7),
        lambda: device.command_inout("Echo", "hello"),
        lambda: device.read_attributes(["temperature", "counter"]),
        lambda: device.command_inout("Increment"),
    ]
    for i in range(calls):
        steps[i % len(steps)]()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("calls", type=int)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--mix", action="store_true")
    args = parser.parse_args()

    device = tango.DeviceProxy(args.url)
    result = {"pid": os.getpid(), "pytango": tango.__version__, "calls": args.calls}
    if args.mix:
        start = time.perf_counter()
        mixed(device, args.calls)
        result["seconds"] = time.perf_counter() - start
        print(json.dumps(result), flush=True)
        return

    read = device.read_attribute
    for _ in range(args.warmup):
        read("temperature")
    # Per-call times cost ~0.1 us each, well below the ~200 us of one round trip.
    durations = [0] * args.calls
    clock = time.perf_counter_ns
    cpu_start = time.process_time()
    start = clock()
    for i in range(args.calls):
        before = clock()
        read("temperature")
        durations[i] = clock() - before
    seconds = (clock() - start) / 1e9
    cpu = time.process_time() - cpu_start
    durations.sort()
    result.update(
        seconds=seconds,
        cpu_s=cpu,
        calls_per_s=args.calls / seconds,
        p50_us=durations[len(durations) // 2] / 1e3,
        p99_us=durations[min(len(durations) - 1, len(durations) * 99 // 100)] / 1e3,
    )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
