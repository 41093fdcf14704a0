"""What fanning out costs per event on SQLite, in process: a measurement, not a test.

    python -m tests.notify.fanout_cost [EVENTS]

Writes EVENTS `activation.created` events (2,000 by default) over a world of resellers, customers, people and
endpoints, then times only the worker's fan_out rounds (FAN_OUT_BATCH events each; commits are not counted), in
CPU time: the database is in process too, and a busy machine's other work is not this work.
Each configuration runs on a fresh database, three times, and the least is shown (on a busy machine the
rest is its other work): mail off or on, and the event's data with or without the hostname the emitter
may already carry."""

from __future__ import annotations

import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import Connection

from server.db.database import normalise_url, sqlite_engine
from server.db.migrate import upgrade
from server.notify import outbox
from server.notify.routing import Routing
from server.notify.worker import fan_out
from tests.notify.fanout_world import T0, activation_data, build, transfer

MAIL_OFF = Routing(False, "", "")
MAIL_ON = Routing(True, "support@vendor.test", "vendor@vendor.test")
RUNS = 3


def seed(conn: Connection, events: int, hostname: bool) -> None:
    world = build(conn, customers=20, licences=40, seats=events)
    for seat in range(0, events, 50):  # some seats were made by an approved transfer: their owners hear of them
        transfer(conn, world, seat, f"user{seat % 20}@customer{seat % 20}.test", new_seat=seat + 1)
    for seat, (licence, _) in enumerate(world.seats):
        outbox.emit(conn, "activation.created", licence, activation_data(world, seat, hostname=hostname), T0)


def measure(directory: Path, events: int, routing: Routing, hostname: bool) -> float:
    url = f"sqlite:///{directory / f'fanout-{uuid.uuid4()}.db'}"
    upgrade(url)
    engine = sqlite_engine(normalise_url(url))
    try:
        with engine.begin() as conn:
            seed(conn, events, hostname)
        spent, done = 0.0, 0
        while True:
            with engine.begin() as conn:
                started = time.process_time()
                fanned = fan_out(conn, routing, T0)
                spent += time.process_time() - started
            if not fanned:
                break
            done += fanned
        assert done == events
        return spent / events * 1e6
    finally:
        engine.dispose()


def main() -> None:
    events = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    with tempfile.TemporaryDirectory() as directory:
        for routing, name in ((MAIL_OFF, "mail off"), (MAIL_ON, "mail on")):
            for hostname in (False, True):
                micros = min(measure(Path(directory), events, routing, hostname) for _ in range(RUNS))
                data = "hostname in data" if hostname else "hostname looked up"
                print(f"{name:8}  {data:18}  {micros:7.1f} µs/event  ({events} events)")


if __name__ == "__main__":
    main()
