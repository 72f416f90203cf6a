"""Registers and configures device servers in the Tango database of TANGO_HOST, and waits for them.

Runs with PyTango 10.x (the venv) or 9.3 (Debian's python3-tango).

Usage:
  db_register.py server SERVER/INSTANCE CLASS DEVICE [DEVICE ...]
      Registers the devices (idempotent), e.g. `server Demo/db Demo test/dbdemo/1`.
  db_register.py tangotest INSTANCE DEVICE [PERIOD_MS ABS_CHANGE]
      Registers TangoTest/INSTANCE with DEVICE. With PERIOD_MS and ABS_CHANGE, `double_scalar` is
      polled every PERIOD_MS and fires change events on ABS_CHANGE (needed to subscribe to them);
      without, both are removed. Takes effect when the server starts.
  db_register.py wait PID TIMEOUT_S DEVICE [DEVICE ...]
      Waits until every DEVICE is exported by process PID and answers a ping; exit status 1 on
      timeout, 2 if PID exits first.
"""

import sys
import time

import tango

EVENT_ATTRIBUTE = "double_scalar"


def register_server(server, klass, devices):
    db = tango.Database()
    for name in devices:
        info = tango.DbDevInfo()
        info.name = name
        info._class = klass
        info.server = server
        db.add_device(info)


def configure_tangotest(device, period_ms=None, abs_change=None):
    db = tango.Database()
    if period_ms is None:
        db.delete_device_property(device, ["polled_attr"])
        db.delete_device_attribute_property(device, {EVENT_ATTRIBUTE: ["abs_change"]})
    else:
        # polled_attr is [attribute, period, attribute, period, ...]; read when the server starts.
        db.put_device_property(device, {"polled_attr": [EVENT_ATTRIBUTE, str(period_ms)]})
        db.put_device_attribute_property(device, {EVENT_ATTRIBUTE: {"abs_change": [str(abs_change)]}})


def process_state(pid):
    """The process's state letter, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


def wait_devices(pid, timeout, devices):
    deadline = time.monotonic() + timeout
    db = tango.Database()
    pending = list(devices)
    last_error = "not tried"
    while pending:
        if process_state(pid) in (None, "Z", "X"):
            print(f"process {pid} exited before exporting {pending}", file=sys.stderr)
            sys.exit(2)
        name = pending[0]
        try:
            # The database must name *this* process: a stale export of an earlier run of the same
            # server would otherwise pass (or hang on a dead address).
            info = db.get_device_info(name)
            if info.exported and info.pid == pid:
                tango.DeviceProxy(name).ping()
                pending.pop(0)
                continue
            last_error = f"{name} exported={info.exported} pid={info.pid}"
        except tango.DevFailed as error:
            last_error = f"{name}: {error.args[0].reason}: {error.args[0].desc.strip()}"
        if time.monotonic() > deadline:
            print(f"timed out waiting for {pending}: {last_error}", file=sys.stderr)
            sys.exit(1)
        time.sleep(0.05)


def main():
    command, *args = sys.argv[1:] or ["help"]
    if command == "server" and len(args) >= 3:
        server, klass, *devices = args
        register_server(server, klass, devices)
    elif command == "tangotest" and len(args) in (2, 4):
        instance, device, *events = args
        register_server(f"TangoTest/{instance}", "TangoTest", [device])
        configure_tangotest(device, *events)
    elif command == "wait" and len(args) >= 3:
        pid, timeout, *devices = args
        wait_devices(int(pid), float(timeout), devices)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
