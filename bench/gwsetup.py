"""Create the bench's rooms in the gateway's database: public, open to mail and to MQTT.

The production profile creates no room on first use, and ``manage.py addroom`` makes one room per
process start (and cannot open a room to anonymous MQTT); the idle-connections scenario needs
hundreds. Run with the gateway's environment: ``python -m bench.gwsetup NAME... [--idle PREFIX COUNT]``.
"""

from __future__ import annotations

import argparse
import os


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", help="rooms to create")
    parser.add_argument("--idle", nargs=2, metavar=("PREFIX", "COUNT"), help="also PREFIX0 … PREFIX<COUNT-1>")
    arguments = parser.parse_args()
    names = list(arguments.names)
    if arguments.idle:
        prefix, count = arguments.idle[0], int(arguments.idle[1])
        names += [f"{prefix}{number}" for number in range(count)]

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from gateway.models import Room

    rooms = [Room(name=name, public=True, email_open=True, mqtt_open=True) for name in names]
    for room in rooms:
        room.full_clean(validate_unique=False)
    Room.objects.bulk_create(rooms, batch_size=500)
    print(f"created {len(rooms)} rooms")


if __name__ == "__main__":
    main()
