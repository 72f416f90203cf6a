"""A PyTango device server for the live-view and session tests: fast attributes, and one that
sleeps 20 ms (TOP_LAGGING_MS, when set) on devices whose name has "slow" in it.

Usage: top_server.py INSTANCE PORT DEVICE [DEVICE ...]
"""

import os
import sys
import time

LAGGING_S = float(os.environ.get("TOP_LAGGING_MS", "20")) / 1000

from tango.server import Device, attribute


class TopDemo(Device):
    @attribute(dtype=float)
    def fast_a(self):
        return 1.0

    @attribute(dtype=float)
    def fast_b(self):
        return 2.0

    @attribute(dtype=float)
    def lagging(self):
        if "slow" in self.get_name() and LAGGING_S > 0:
            time.sleep(LAGGING_S)
        return 3.0


def main():
    instance, port, *devices = sys.argv[1:]
    args = [instance, "-nodb", "-dlist", ",".join(devices), "-ORBendPoint", f"giop:tcp:127.0.0.1:{port}"]
    TopDemo.run_server(args=args)


if __name__ == "__main__":
    main()
