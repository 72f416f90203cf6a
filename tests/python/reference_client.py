"""Runs the steps of the native reference capture (tests/reference/) against Demo devices.

Usage: reference_client.py DEVICE_URL PEER_URL STEP [STEP ...]
The steps make the same calls as the client that produced the reference, in the same order, each
followed by a pause so that its spans fall in its own time window:
  connect            DeviceProxy(DEVICE_URL), ping(), state()
  read_attribute     read_attribute("temperature")
  write_attribute    write_attribute("counter", 7)
  read_attribute_counter  read_attribute("counter")
  command_inout      command_inout("Increment")
  command_inout_echo command_inout("Echo", "hello")
  read_attributes    read_attributes(["temperature", "counter"])
  nested             command_inout("ReadPeer", PEER_URL): the device builds a DeviceProxy and reads
  subscribe_event    subscribe_event("temperature", CHANGE_EVENT) (waits for the initial event)
  push_event         command_inout("PushTemperature") twice, each event awaited
  unsubscribe_event  unsubscribe_event(...)
  kill=ADMIN_URL     DeviceProxy(ADMIN_URL).command_inout("Kill"): what the reference's test context
                     did to end each server (outside-client-steps.json); ends the server
Prints one JSON object, the form of the reference's client-steps.json:
{"pid": ..., "steps": [[name, start_ns, end_ns], ...]} (wall clock, time.time_ns()).
"""

import json
import os
import sys
import threading
import time

import tango

PAUSE = 0.3


def main():
    url, peer, *names = sys.argv[1:]
    state = {"device": None, "subscription": None}
    events = []
    arrived = threading.Condition()

    def on_event(event):
        with arrived:
            events.append(event)
            arrived.notify_all()

    def await_events(count):
        with arrived:
            if not arrived.wait_for(lambda: len(events) >= count, timeout=10):
                raise RuntimeError(f"only {len(events)} of {count} events arrived")
            if any(e.err for e in events):
                raise RuntimeError(f"error event: {events}")

    def connect():
        state["device"] = tango.DeviceProxy(url)
        state["device"].ping()
        state["device"].state()

    def subscribe():
        state["subscription"] = state["device"].subscribe_event(
            "temperature", tango.EventType.CHANGE_EVENT, on_event)
        await_events(1)

    def push():
        for n in (2, 3):
            state["device"].command_inout("PushTemperature")
            await_events(n)

    steps = {
        "connect": connect,
        "read_attribute": lambda: state["device"].read_attribute("temperature"),
        "write_attribute": lambda: state["device"].write_attribute("counter", 7),
        "read_attribute_counter": lambda: state["device"].read_attribute("counter"),
        "command_inout": lambda: state["device"].command_inout("Increment"),
        "command_inout_echo": lambda: state["device"].command_inout("Echo", "hello"),
        "read_attributes": lambda: state["device"].read_attributes(["temperature", "counter"]),
        "nested": lambda: state["device"].command_inout("ReadPeer", peer),
        "subscribe_event": subscribe,
        "push_event": push,
        "unsubscribe_event": lambda: state["device"].unsubscribe_event(state["subscription"]),
    }
    def kill(admin_url):
        tango.DeviceProxy(admin_url).command_inout("Kill")

    done = []
    for step in names:
        name, _, argument = step.partition("=")
        start = time.time_ns()
        if name == "kill":
            kill(argument)
        else:
            steps[name]()
        time.sleep(PAUSE)
        done.append([name, start, time.time_ns()])
    print(json.dumps({"pid": os.getpid(), "steps": done}), flush=True)


if __name__ == "__main__":
    main()
