"""The Demo device server of demo_server.py, registered in the Tango database of TANGO_HOST.

Usage: demo_db_server.py INSTANCE DEVICE [DEVICE ...]
Registers server Demo/INSTANCE (class Demo) with the devices, then serves them on an ephemeral
127.0.0.1 port; clients find them through the database (and, on the same host, reach them over
omniORB's Unix socket unless ORBclientTransportRule says otherwise).
"""

import sys

from db_register import register_server
from demo_server import Demo


def main():
    instance, *devices = sys.argv[1:]
    if not devices:
        sys.exit(__doc__)
    register_server(f"Demo/{instance}", "Demo", devices)
    # run_server puts the server name ("Demo", the class name) in front of these arguments.
    Demo.run_server(args=[instance, "-ORBendPoint", "giop:tcp:127.0.0.1:"])


if __name__ == "__main__":
    main()
