"""Building blocks of the OpenAPI 3.1 document (GET /openapi.json), shared by every audience's routes."""

from __future__ import annotations

from typing import Any

PROBLEM_CONTENT = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}


def operation(
    summary: str,
    *,
    ok: dict[str, dict[str, Any]],
    body: str | None = None,
    params: tuple[str, ...] = (),
    query: dict[str, dict[str, Any]] | None = None,
    bearer: bool = False,
) -> dict[str, Any]:
    """One operation: `ok` maps each success status to its JSON schema; every error is a problem document."""
    doc: dict[str, Any] = {
        "summary": summary,
        "responses": {
            **{
                s: {"description": "OK", "content": {"application/json": {"schema": schema}}}
                for s, schema in ok.items()
            },
            "default": {"description": "problem", "content": PROBLEM_CONTENT},
        },
    }
    parameters = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in params]
    parameters += [{"name": n, "in": "query", "required": False, "schema": s} for n, s in (query or {}).items()]
    if parameters:
        doc["parameters"] = parameters
    if bearer:
        doc["security"] = [{"bearer": []}]
    if body:
        doc["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}},
        }
    return doc


def bearer_op(
    summary: str,
    *,
    body: str | None = None,
    ok: str = "200",
    ok_schema: dict[str, Any] | None = None,
    params: tuple[str, ...] = (),
    query: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One operation of the bearer-token APIs."""
    schema = ok_schema or {"type": "object"}
    return operation(summary, ok={ok: schema}, body=body, params=params, query=query, bearer=True)
