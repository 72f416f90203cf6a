"""A Tango client for database-registered devices: runs the named steps against one device.

Written for Debian's PyTango 9.3 (libtango 9.3.4, run it with Debian's /usr/bin/python3) and works
unchanged with PyTango 10.x. Mirrors demo_client.py.

Usage: legacy_client.py DEVICE STEP [STEP ...]
DEVICE is a database name (`sys/tg_test/1`, found through TANGO_HOST) or a full Tango URL.
STEP is one of
  read_attribute=ATTR  read_attributes=ATTR,ATTR  write_attribute=ATTR:VALUE
  command_inout=CMD  command_inout=CMD:ARG  ping  state
  change_events=ATTR:N   (subscribes, waits up to 10 s for N change events, unsubscribes)
  nested=PEER   (the Demo device's ReadPeer command)
  logging_level=N   (DeviceProxy.set_logging_level: the device's logging level, 5 = DEBUG)
  get_logging_level   (the device's logging level now: 0 OFF, 1 FATAL … 5 DEBUG)
or a step of demo_client.py for Demo devices (read_attribute, write_attribute, command_inout, ...).
VALUE and ARG are taken as an int, else a float, else a string.
Prints one JSON object: {"pid": ..., "version": "<PyTango version>", "steps": {"step": "ok" |
"DevFailed:<reason>" | "error:<type>:<text>"}, "values": {"step": value}}.
"""

import json
import os
import sys
import threading

import tango

EVENT_TIMEOUT_S = 10.0

# demo_client.py's steps, for Demo devices.
DEMO_STEPS = {
    "read_attribute": "read_attribute=temperature",
    "read_attributes": "read_attributes=temperature,counter",
    "write_attribute": "write_attribute=counter:7",
    "command_inout": "command_inout=Echo:hello",
    "increment": "command_inout=Increment",
    "fail": "command_inout=Fail:BoomReason",
}


def parse_value(text):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def plain(value):
    """A JSON-serialisable form of a value PyTango returned (numpy scalars and arrays included)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    return str(value)


def change_events(device, attribute, count):
    received = []
    done = threading.Event()

    def callback(event):
        if not event.err:
            received.append(plain(event.attr_value.value))
            if len(received) >= count:
                done.set()

    ident = device.subscribe_event(attribute, tango.EventType.CHANGE_EVENT, callback)
    try:
        if not done.wait(EVENT_TIMEOUT_S):
            raise RuntimeError(f"{len(received)} of {count} change events in {EVENT_TIMEOUT_S} s")
    finally:
        device.unsubscribe_event(ident)
    return received[:count]


def run_step(device, step):
    name, _, arg = DEMO_STEPS.get(step, step).partition("=")
    if name == "read_attribute":
        return plain(device.read_attribute(arg).value)
    if name == "read_attributes":
        return [plain(a.value) for a in device.read_attributes(arg.split(","))]
    if name == "write_attribute":
        attribute, _, value = arg.partition(":")
        device.write_attribute(attribute, parse_value(value))
        return None
    if name == "command_inout":
        command, sep, value = arg.partition(":")
        if sep:
            return plain(device.command_inout(command, parse_value(value)))
        return plain(device.command_inout(command))
    if name == "ping":
        return device.ping()
    if name == "state":
        return str(device.state())
    if name == "change_events":
        attribute, _, count = arg.partition(":")
        return change_events(device, attribute, int(count or 1))
    if name == "nested":
        return plain(device.command_inout("ReadPeer", arg))
    if name == "get_logging_level":
        return device.get_logging_level()
    if name == "logging_level":
        device.set_logging_level(int(arg))
        return None
    raise ValueError(f"unknown step {step!r}")


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    device = tango.DeviceProxy(sys.argv[1])
    outcome, values = {}, {}
    for step in sys.argv[2:]:
        try:
            values[step] = run_step(device, step)
            outcome[step] = "ok"
        except tango.DevFailed as error:
            outcome[step] = "DevFailed:" + error.args[0].reason
        except Exception as error:  # noqa: BLE001 - a failed step is a result, not a crash
            outcome[step] = f"error:{type(error).__name__}:{error}"
    print(json.dumps({"pid": os.getpid(), "version": tango.__version__, "steps": outcome,
                      "values": values}), flush=True)


if __name__ == "__main__":
    main()
