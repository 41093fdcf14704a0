"""tessera-admin webhooks … and notices run: the operator's side of notifications."""

from __future__ import annotations

import argparse
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection

from server.cli.kit import CliError, date_arg
from server.cli.units import now, run_unit
from server.notify.dates import business_day, notices_unit
from server.notify.events import EVENT_TYPES
from server.services import webhooks
from server.services.access import OPERATOR
from server.settings import Settings, SettingsError, load_settings


def _run(args: argparse.Namespace, fn: Any, *fn_args: Any) -> Any:
    return run_unit(args, fn, *fn_args)


def _now() -> datetime:
    return now()


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        raise CliError(exc.code, str(exc)) from exc


def webhooks_cmd(args: argparse.Namespace) -> Any:
    if args.action == "add":
        return _run(args, webhooks.add_endpoint, OPERATOR, args.url, args.event, args.description, _now())
    if args.action == "list":
        return _run(args, webhooks.list_endpoints, OPERATOR, _now())
    if args.action == "remove":
        return _run(args, webhooks.remove_endpoint, OPERATOR, args.id, _now())
    if args.action == "rotate":
        overlap = args.overlap if args.overlap is not None else _settings().webhook_secret_overlap
        return _run(args, webhooks.rotate_secret, OPERATOR, args.id, overlap, _now())
    if args.action == "deliveries":
        return _run(args, webhooks.list_deliveries, OPERATOR, args.endpoint, args.state, args.limit)
    if args.action == "delivery":
        return _run(args, webhooks.show_delivery, OPERATOR, args.id)
    if args.action == "discard":
        return _run(args, webhooks.discard_delivery, OPERATOR, args.id, _now())
    return _run(args, webhooks.redeliver, OPERATOR, args.id, _now())


def notices_all(conn: Connection, today: date, zone: str, deadline_days: tuple[int, ...], expiry_days: int,
                now: datetime) -> dict[str, Any]:  # fmt: skip
    emitted, after = notices_unit(conn, today, zone, deadline_days, expiry_days, now, None)
    while after is not None:
        more, after = notices_unit(conn, today, zone, deadline_days, expiry_days, now, after)
        emitted += more
    return {"date": today.isoformat(), "time_zone": zone, "notices": emitted}


def notices_cmd(args: argparse.Namespace) -> Any:
    settings = _settings()
    zone = args.time_zone or getattr(settings, "business_time_zone", "UTC")
    try:
        today = args.date or business_day(_now(), ZoneInfo(zone))
    except (KeyError, ValueError) as exc:
        raise CliError("bad-time-zone", f"unknown time zone {zone!r}") from exc
    days = settings.notify_deadline_days
    return _run(args, notices_all, today, zone, days, settings.notify_expiry_days, _now())


_date = date_arg


def register(sub: Any) -> None:
    group = sub.add_parser("webhooks", help="webhook endpoints and the delivery log").add_subparsers(
        dest="action", required=True
    )
    p = group.add_parser("add", help="register an endpoint (the whsec_ secret is printed once)")
    p.add_argument("url", help="the endpoint's URL (http:// or https://)")
    p.add_argument("--event", action="append", choices=EVENT_TYPES, help="only this event type (repeatable)")
    p.add_argument("--description", default="", help="a note to tell endpoints apart")
    group.add_parser("list", help="every endpoint")
    group.add_parser("remove", help="remove an endpoint").add_argument("id", help="the endpoint's id")
    p = group.add_parser("rotate", help="new secret; the previous one keeps signing for the overlap")
    p.add_argument("id", help="the endpoint's id")
    p.add_argument("--overlap", type=float, help="seconds (default: the webhook_secret_overlap setting)")
    p = group.add_parser("deliveries", help="the delivery log, e-mail included; --state dead: dead letters")
    p.add_argument("endpoint", nargs="?", help="only this endpoint's")
    p.add_argument("--state", choices=webhooks.DELIVERY_STATES, help="only the deliveries in this state")
    p.add_argument("--limit", type=int, default=100, help="at most this many deliveries (default 100)")
    group.add_parser("delivery", help="one delivery and its attempts").add_argument("id", help="the delivery's id")
    group.add_parser("redeliver", help="send a delivery again, with the same event id").add_argument(
        "id", help="the delivery's id"
    )
    group.add_parser("discard", help="remove a dead letter for good (retention keeps dead ones)").add_argument(
        "id", help="the delivery's id"
    )
    for p in group.choices.values():
        p.set_defaults(func=webhooks_cmd)

    group = sub.add_parser("notices", help="date-driven notices").add_subparsers(dest="action", required=True)
    p = group.add_parser("run", help="write the notices due on a day (the server does this by itself)")
    p.add_argument("--date", type=_date, help="the business day to run for (default: today)")
    p.add_argument("--time-zone", help="default: the business time zone setting, else UTC")
    p.set_defaults(func=notices_cmd)
