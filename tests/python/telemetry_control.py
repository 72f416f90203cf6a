"""Changes a device's telemetry through PyTango's own API (which sends the admin-device commands).

Usage: telemetry_control.py DEVICE start | stop | tracing-endpoint EXPORTER ENDPOINT
       | logging-endpoint EXPORTER ENDPOINT | logging on|off
Prints {"pid": ..., "result": "ok" | "DevFailed:<reason>"}: a 9.x server answers with a
command-not-found DevFailed, after the command went over the wire.
"""

import json
import os
import sys

import tango
from tango._telemetry import TelemetryEndpoint, TelemetryExporter


def main():
    device, action, *args = sys.argv[1:]
    proxy = tango.DeviceProxy(device)
    try:
        if action == "start":
            proxy.start_telemetry()
        elif action == "stop":
            proxy.stop_telemetry()
        elif action == "tracing-endpoint":
            exporter, endpoint = args
            proxy.set_telemetry_tracing_endpoints([TelemetryEndpoint(TelemetryExporter[exporter.upper()], endpoint)])
        elif action == "logging-endpoint":
            exporter, endpoint = args
            proxy.set_telemetry_logging_endpoints([TelemetryEndpoint(TelemetryExporter[exporter.upper()], endpoint)])
        elif action == "logging":
            (state,) = args
            proxy.set_telemetry_logging(state == "on")
        else:
            raise SystemExit(f"unknown action {action}")
        outcome = "ok"
    except tango.DevFailed as error:
        outcome = "DevFailed:" + error.args[0].reason
    print(json.dumps({"pid": os.getpid(), "result": outcome}), flush=True)


if __name__ == "__main__":
    main()
