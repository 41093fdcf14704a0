"""GET /docs: the OpenAPI document as a page to read, rendered on the server from the same document
`/openapi.json` serves (no script, no stylesheet or font from anywhere else)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
import orjson
from aiohttp import web

from server.api.ops import OPENAPI

routes = web.RouteTableDef()
_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
PAGE = web.AppKey("docs_page", bytes)
METHODS = ("get", "post", "put", "patch", "delete")
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "public, max-age=300",
}


def _ref_name(schema: dict[str, Any]) -> str | None:
    ref = schema.get("$ref")
    return ref.rsplit("/", 1)[-1] if isinstance(ref, str) else None


def _type_of(schema: dict[str, Any]) -> str:
    if name := _ref_name(schema):
        return name
    if "anyOf" in schema:
        return " or ".join(_type_of(s) for s in schema["anyOf"])
    if "enum" in schema:
        return " | ".join(str(v) for v in schema["enum"])
    if schema.get("type") == "array":
        return f"list of {_type_of(schema.get('items', {}))}"
    kind = schema.get("type", "object")
    bounds = [f"{k} {schema[k]}" for k in ("minimum", "maximum", "minLength", "maxLength") if k in schema]
    return f"{kind} ({', '.join(bounds)})" if bounds else str(kind)


def _fields(schema: dict[str, Any]) -> list[dict[str, Any]]:
    required = set(schema.get("required", []))
    return [
        {"name": name, "type": _type_of(prop), "required": name in required, "about": prop.get("description", "")}
        for name, prop in schema.get("properties", {}).items()
    ]


def _responses(responses: dict[str, Any]) -> dict[str, Any]:
    """What an operation answers: each success status with its model (or type), and its refusals, the problem
    codes per status (`x-problem-codes`)."""
    answers, refusals = [], []
    for status, response in sorted(responses.items()):
        if "x-problem-codes" in response:
            refusals.append({"status": status, "codes": response["x-problem-codes"]})
        elif status != "default":
            shown = [{"type": media, "model": _ref_name(content.get("schema", {})),
                      "about": _type_of(content.get("schema", {}))}
                     for media, content in response.get("content", {}).items()]  # fmt: skip
            answers.append({"status": status, "content": shown})
    return {"answers": answers, "refusals": refusals, "responses": sorted(responses)}


def render(document: dict[str, Any]) -> bytes:
    schemas = document.get("components", {}).get("schemas", {})
    groups: dict[str, list[dict[str, Any]]] = {}
    for path, item in sorted(document["paths"].items()):
        for method in METHODS:
            if method not in item:
                continue
            op = item[method]
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
            body_name = _ref_name(body)
            groups.setdefault((op.get("tags") or ["other"])[0], []).append({
                "method": method.upper(), "path": path, "id": op.get("operationId", f"{method}-{path}"),
                "summary": op.get("summary", ""), "bearer": bool(op.get("security")),
                "parameters": [{"name": p["name"], "in": p["in"], "required": p.get("required", False),
                                "type": _type_of(p.get("schema", {}))} for p in op.get("parameters", [])],
                "body": body_name, **_responses(op.get("responses", {})),
            })  # fmt: skip
    models = {name: _fields(schema) for name, schema in sorted(schemas.items()) if schema.get("properties")}
    page = _env.get_template("docs.html").render(info=document.get("info", {}), groups=sorted(groups.items()),
                                                 models=models)  # fmt: skip
    return page.encode()


@routes.get("/docs")
async def docs(request: web.Request) -> web.Response:
    app = request.app
    if PAGE not in app:  # the document is built once at start-up; its page once, on first view
        app[PAGE] = render(orjson.loads(app[OPENAPI].body))
    return web.Response(body=app[PAGE], content_type="text/html", charset="utf-8", headers=HEADERS)
