"""Sets (NAME=VALUE) or deletes (NAME=) device properties in the database of TANGO_HOST.

Usage: db_props.py DEVICE NAME=VALUE [NAME=VALUE ...]
"""

import sys

import tango


def main():
    device, *settings = sys.argv[1:]
    db = tango.Database()
    put, delete = {}, []
    for setting in settings:
        name, _, value = setting.partition("=")
        if value:
            put[name] = [value]
        else:
            delete.append(name)
    if put:
        db.put_device_property(device, put)
    if delete:
        db.delete_device_property(device, delete)


if __name__ == "__main__":
    main()
