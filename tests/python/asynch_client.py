"""A client with several requests in flight at once from one DeviceProxy (asynchronous calls).

Usage: asynch_client.py DEVICE_URL ROUNDS
Each round sends four requests to a Demo device without waiting (read_attribute_asynch of
`temperature`, write_attribute_asynch of `counter`, command_inout_asynch of `Echo` and of
`Increment`: one of each server operation, so that each request's spans can be told apart within
the round), then collects the four replies. Set ORBoneCallPerConnection=0 in the environment to let
omniORB put several of them on one connection.
Prints one JSON object: {"pid": ..., "rounds": [[start_ns, end_ns], ...]} (wall clock, each round
from before its first send to after its last reply).
"""

import json
import os
import sys
import time

import tango

REPLY_TIMEOUT_MS = 10_000


def main():
    url, rounds = sys.argv[1], int(sys.argv[2])
    device = tango.DeviceProxy(url)
    windows = []
    for round_number in range(rounds):
        start = time.time_ns()
        read = device.read_attribute_asynch("temperature")
        write = device.write_attribute_asynch("counter", round_number)
        echo = device.command_inout_asynch("Echo", f"round {round_number}")
        increment = device.command_inout_asynch("Increment")
        device.read_attribute_reply(read, REPLY_TIMEOUT_MS)
        device.write_attribute_reply(write, REPLY_TIMEOUT_MS)
        assert device.command_inout_reply(echo, REPLY_TIMEOUT_MS) == f"round {round_number}"
        device.command_inout_reply(increment, REPLY_TIMEOUT_MS)
        windows.append([start, time.time_ns()])
    print(json.dumps({"pid": os.getpid(), "rounds": windows}), flush=True)


if __name__ == "__main__":
    main()
