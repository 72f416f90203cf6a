"""A PyTango device server used by the integration tests.

Usage: demo_server.py INSTANCE [ADDRESS:]PORT DEVICE [DEVICE ...]
Runs without a database on ADDRESS:PORT (default address 127.0.0.1); a device's `peer` property-free
`ReadPeer` command reads `temperature` (or `dev/ice/name/attribute`) from the device named by argin.
`PushTemperature` pushes one change event of `temperature`; `PushBurst(n)` pushes n in a loop (for
the event benchmark) and returns the seconds the loop took.
"""

import sys
import time

import tango
from tango.server import Device, attribute, command


class Demo(Device):
    _counter = 0
    _temperature = 21.5

    @attribute(dtype=float)
    def temperature(self):
        return self._temperature

    @attribute(dtype=int)
    def counter(self):
        return self._counter

    @counter.write
    def counter(self, value):
        self._counter = value

    @command
    def Increment(self):
        self._counter += 1

    @command(dtype_in=str, dtype_out=str)
    def Echo(self, text):
        return text

    @command(dtype_in=str, dtype_out=float)
    def ReadPeer(self, peer):
        # "domain/family/member" reads its temperature; "domain/family/member/attr" that attribute.
        device, attribute = peer, "temperature"
        if not peer.startswith("tango://") and peer.count("/") == 3:
            device, attribute = peer.rsplit("/", 1)
        return float(tango.DeviceProxy(device).read_attribute(attribute).value)

    @command(dtype_in=str)
    def Fail(self, reason):
        tango.Except.throw_exception(reason, "Failed on request", "Demo.Fail")

    @command
    def PushTemperature(self):
        self._temperature += 1.0
        self.push_change_event("temperature", self._temperature)

    @command(dtype_in=int, dtype_out=float)
    def PushBurst(self, count):
        # Every value is new (+1 each), so a subscriber can tell which pushes it missed.
        push = self.push_change_event
        start = time.perf_counter()
        for _ in range(count):
            self._temperature += 1.0
            push("temperature", self._temperature)
        return time.perf_counter() - start

    def init_device(self):
        super().init_device()
        self.set_change_event("temperature", True, False)


def main():
    instance, endpoint, *devices = sys.argv[1:]
    address, _, port = endpoint.rpartition(":")
    # run_server puts the server name in front itself: the server is Demo/<instance>.
    args = [instance, "-nodb", "-dlist", ",".join(devices),
            "-ORBendPoint", f"giop:tcp:{address or '127.0.0.1'}:{port}"]
    Demo.run_server(args=args)


if __name__ == "__main__":
    main()
