"""Cursor pagination of every list: `?limit=` (1 to 1000, default 100) and `?cursor=` from the previous page's
`next`; the answer is `{"items": [...], "next": url | null}` and, when another page follows, a `Link` header.

A cursor is the key of the last item shown, tagged with the list it belongs to (and the licence, customer or
endpoint of that list): a cursor of another list, or one that was altered, is a 422 `invalid-cursor`.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import date, datetime
from typing import Any

import orjson
from aiohttp import web

from server.api.auth import query_int
from server.api.schemas import Answer, answer
from server.domain.errors import InvalidCursor
from server.services.listing import Key, Page, Slice

DEFAULT_LIMIT, MAX_LIMIT = 100, 1000
PAGE_QUERY = ("cursor", "limit")
MAX_CURSOR = 400
# The type of each part of a key: a moment, a day (a release date), a row id, a name (an audit chain), a whole
# number (its sequence).
AT, DAY, ID, TEXT, NUMBER = "t", "d", "u", "s", "i"


def read_page(request: web.Request, listing: str, shape: str) -> Page:
    limit = query_int(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    raw = request.query.get("cursor")
    return Page(limit, None if raw is None else decode(raw, listing, shape))


def encode(listing: str, key: Key) -> str:
    parts = [part.isoformat() if isinstance(part, date) else part for part in key]
    parts = [str(part) if isinstance(part, uuid.UUID) else part for part in parts]
    return base64.urlsafe_b64encode(orjson.dumps([listing, parts])).rstrip(b"=").decode()


def decode(raw: str, listing: str, shape: str) -> Key:
    """The key a cursor holds, if it is one this list gave out; else InvalidCursor."""
    refused = InvalidCursor("the cursor is not one this list gave out: start again without it")
    if not raw or len(raw) > MAX_CURSOR or not raw.isascii():
        raise refused
    try:
        tagged = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise refused from exc
    if not (isinstance(tagged, list) and len(tagged) == 2 and tagged[0] == listing and isinstance(tagged[1], list)
            and len(tagged[1]) == len(shape)):  # fmt: skip
        raise refused
    try:
        return tuple(_part(kind, value) for kind, value in zip(shape, tagged[1], strict=True))
    except (TypeError, ValueError, OverflowError) as exc:
        raise refused from exc


def _part(kind: str, value: Any) -> Any:
    if kind in (AT, DAY, ID) and not isinstance(value, str):
        raise ValueError("not a cursor part")
    if kind == DAY:
        return date.fromisoformat(value)
    if kind == AT:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            raise ValueError("a cursor's moment is aware")
        return moment
    if kind == ID:
        return uuid.UUID(value)
    if kind == NUMBER and type(value) is int and 0 <= value < 2**63:
        return value
    if kind == TEXT and isinstance(value, str) and len(value) <= 200 and value.isprintable():
        return value
    raise ValueError("not a cursor part")


def page_response(
    request: web.Request, listing: str, page: Page, shown: Slice, model: type[Answer], **extra: Any
) -> web.Response:
    """The page as `{"items", "next"}` (and what else the list says about itself), checked against its model
    (schemas.page_of), with `Link: <…>; rel="next"`.

    The next link is a path and query: it resolves against whatever address the caller used."""
    link = None
    if shown.next is not None:
        link = str(request.rel_url.update_query(cursor=encode(listing, shown.next), limit=str(page.limit)))
    response = answer(model, extra | {"items": shown.items, "next": link})
    if link is not None:
        response.headers["Link"] = f'<{link}>; rel="next"'
    return response


PAGE_PARAMETERS: dict[str, dict[str, Any]] = {
    "cursor": {"type": "string", "minLength": 1, "maxLength": MAX_CURSOR, "pattern": "^[A-Za-z0-9_-]+$"},
    "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
}
