"""A PyTango device server whose user code takes known times, for the user-level span tests.

Usage: user_code_server.py INSTANCE PORT DEVICE [DEVICE ...]
Runs without a database on 127.0.0.1:PORT (class Slow):
- `always_executed_hook` sleeps 2 ms;
- attributes `fast`, `medium`, `slow` sleep 1, 5 and 20 ms in their read method; `broken`
  raises; `polled` is polled every 100 ms by the device's polling thread (1 ms a read);
- commands `Work` (sleeps 3 ms, returns its argument doubled) and `Fail` (raises);
- attributes `n0` … `n7` return at once (the cost benchmark reads them).
With USER_CODE_POLLING=off, `polled` is not polled, and USER_CODE_HOOK_MS sets the hook's sleep
(the cost benchmark measures requests only, with `USER_CODE_HOOK_MS=0`).
"""

import os
import sys
import time

from tango.server import Device, attribute, command


HOOK_S = float(os.environ.get("USER_CODE_HOOK_MS", "2")) / 1000


class Slow(Device):
    def always_executed_hook(self):
        if HOOK_S:
            time.sleep(HOOK_S)

    @attribute(dtype=float)
    def fast(self):
        time.sleep(0.001)
        return 1.0

    @attribute(dtype=float)
    def medium(self):
        time.sleep(0.005)
        return 5.0

    @attribute(dtype=float)
    def slow(self):
        time.sleep(0.020)
        return 20.0

    @attribute(dtype=float)
    def broken(self):
        raise RuntimeError("the hardware did not answer")

    def _polled(self):
        time.sleep(0.001)
        return 7

    if os.environ.get("USER_CODE_POLLING") == "off":
        polled = attribute(dtype=int, fget=_polled)
    else:
        polled = attribute(dtype=int, fget=_polled, polling_period=100)

    def _instant(self):
        return 0.0

    for _i in range(8):
        locals()[f"n{_i}"] = attribute(name=f"n{_i}", dtype=float, fget=_instant)
    del _i

    @command(dtype_in=float, dtype_out=float)
    def Work(self, value):
        time.sleep(0.003)
        return 2 * value

    @command
    def Fail(self):
        raise ValueError("the command failed on purpose")


def main():
    instance, port, *devices = sys.argv[1:]
    args = [instance, "-nodb", "-dlist", ",".join(devices), "-ORBendPoint", f"giop:tcp:127.0.0.1:{port}"]
    Slow.run_server(args=args)


if __name__ == "__main__":
    main()
