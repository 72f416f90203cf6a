"""A PyTango device server that logs, for the device-log tests.

Usage: log_server.py INSTANCE PORT DEVICE [DEVICE ...]
Runs without a database on 127.0.0.1:PORT (class LogDev). Commands:
- `LogAll(text)` logs `<level> <text>` at every level, from the serving thread; returns the
  source line of each call, in the order DEBUG, INFO, WARN, ERROR, FATAL.
- `LogFromThread(text)` logs `thread <text>` at WARN from a thread of its own (outside any
  request) and returns that call's line once the thread has ended.
- `LogLong(n)` logs one INFO message of `n` characters.
- `CallPeer(device)` logs `before <device>`, runs `LogAll("nested")` on that device, then logs
  `after <device>`; returns the line of the first call.
- `LogBurst(n)` logs `n` INFO messages `burst <i>`; returns the seconds the loop took.
- `PushAndLog` pushes a change event of `counter` and logs `pushed` (INFO).
"""

import inspect
import sys
import threading
import time

import tango
from tango.server import Device, attribute, command


def here():
    return inspect.currentframe().f_back.f_lineno


class LogDev(Device):
    _counter = 0

    @attribute(dtype=int)
    def counter(self):
        return self._counter

    @command(dtype_in=str, dtype_out=[int])
    def LogAll(self, text):
        lines = []
        lines.append(here() + 1)
        self.debug_stream("DEBUG " + text)
        lines.append(here() + 1)
        self.info_stream("INFO " + text)
        lines.append(here() + 1)
        self.warn_stream("WARN " + text)
        lines.append(here() + 1)
        self.error_stream("ERROR " + text)
        lines.append(here() + 1)
        self.fatal_stream("FATAL " + text)
        return lines

    @command(dtype_in=str, dtype_out=int)
    def LogFromThread(self, text):
        line = here() + 3

        def log():
            self.warn_stream("thread " + text)

        thread = threading.Thread(target=log)
        thread.start()
        thread.join()
        return line

    @command(dtype_in=int)
    def LogLong(self, n):
        self.info_stream("x" * n)

    @command(dtype_in=str, dtype_out=int)
    def CallPeer(self, device):
        line = here() + 1
        self.info_stream("before " + device)
        tango.DeviceProxy(device).command_inout("LogAll", "nested")
        self.info_stream("after " + device)
        return line

    @command(dtype_in=int, dtype_out=float)
    def LogBurst(self, n):
        info = self.info_stream
        start = time.perf_counter()
        for i in range(n):
            info("burst %d" % i)
        return time.perf_counter() - start

    @command
    def PushAndLog(self):
        self._counter += 1
        self.push_change_event("counter", self._counter)
        self.info_stream("pushed")

    def init_device(self):
        super().init_device()
        self.set_change_event("counter", True, False)


def main():
    instance, port, *devices = sys.argv[1:]
    args = [instance, "-nodb", "-dlist", ",".join(devices), "-ORBendPoint", f"giop:tcp:127.0.0.1:{port}"]
    LogDev.run_server(args=args)


if __name__ == "__main__":
    main()
