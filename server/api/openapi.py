"""Building blocks of the OpenAPI 3.1 document (GET /openapi.json), shared by every audience's routes.

Each operation names the pydantic model of every success answer (server.api.schemas) and the refusals it can
answer: the domain errors (server.domain.errors, their HTTP status from its one table) and the few problems
the HTTP layer writes itself. The refusals are listed per status, as `x-problem-codes` and as an enum of the
problem document's `code`, so a client (and schemathesis) knows which codes a status may carry.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from server.domain.errors import (
    HTTP_STATUS,
    BodyTooLarge,
    DomainError,
    MalformedBody,
    ServiceUnavailable,
    Unauthorised,
    UnsupportedMediaType,
    ValidationFailed,
)

PROBLEM_SCHEMA = {"$ref": "#/components/schemas/Problem"}
PROBLEM_CONTENT = {"application/problem+json": {"schema": PROBLEM_SCHEMA}}
# A refusal: a domain error's class, or the (status, code) of a problem the HTTP layer writes itself.
Refusal = type[DomainError] | tuple[int, str]
# The connection layer (server.api.connections) answers these on any path, before or while a handler runs.
CONNECTION_REFUSALS: tuple[Refusal, ...] = (
    (408, "header-timeout"),
    (429, "too-many-connections"),
    (503, "connections-exhausted"),
)
BODY_REFUSALS: tuple[Refusal, ...] = (
    MalformedBody,
    BodyTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
    (400, "body-incomplete"),
    (408, "body-timeout"),
)
# Every response model the document names, by component name (ops.openapi_document adds their schemas).
RESPONSE_MODELS: dict[str, type[BaseModel]] = {}


def model_ref(model: type[BaseModel]) -> dict[str, str]:
    """A $ref to the model's component, registered under its class name (which must be unique)."""
    known = RESPONSE_MODELS.setdefault(model.__name__, model)
    if known is not model:
        raise ValueError(f"two response models are called {model.__name__}: {known.__module__}, {model.__module__}")
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def refusal(error: Refusal) -> tuple[int, str]:
    if isinstance(error, tuple):
        return error
    return HTTP_STATUS[error], error.code


def refusal_responses(refusals: tuple[Refusal, ...] | list[Refusal]) -> dict[str, dict[str, Any]]:
    """The responses of these refusals, one per status, each naming its problem codes."""
    by_status: dict[int, set[str]] = {}
    for status, code in map(refusal, refusals):
        by_status.setdefault(status, set()).add(code)
    responses = {}
    for status, codes in sorted(by_status.items()):
        listed = sorted(codes)
        schema = {"allOf": [PROBLEM_SCHEMA, {"properties": {"status": {"const": status}, "code": {"enum": listed}}}]}
        responses[str(status)] = {
            "description": "problem: " + ", ".join(listed),
            "x-problem-codes": listed,
            "content": {"application/problem+json": {"schema": schema}},
        }
    return responses


def refuses(op: dict[str, Any], *more: Refusal) -> dict[str, Any]:
    """The operation, answering these refusals too (merged into its per-status lists)."""
    declared: list[Refusal] = [(int(s), c) for s, r in op["responses"].items() for c in r.get("x-problem-codes", [])]
    problems = refusal_responses([*declared, *more])
    ok = {s: r for s, r in op["responses"].items() if s != "default" and "x-problem-codes" not in r}
    op["responses"] = {**ok, **problems, "default": op["responses"]["default"]}
    return op


def declared_codes(op: dict[str, Any]) -> dict[int, set[str]]:
    """The problem codes an operation of the document declares, by status."""
    return {int(s): set(r["x-problem-codes"]) for s, r in op["responses"].items() if "x-problem-codes" in r}


def _content(schema: type[BaseModel] | dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": model_ref(schema) if isinstance(schema, type) else schema}}


def operation(
    summary: str,
    *,
    ok: dict[str, type[BaseModel] | dict[str, Any]],
    body: str | None = None,
    params: tuple[str, ...] = (),
    query: dict[str, dict[str, Any]] | None = None,
    bearer: bool = False,
    refusals: tuple[Refusal, ...] = (),
) -> dict[str, Any]:
    """One operation: `ok` maps each success status to its model (or JSON schema); every error is a problem
    document, those of `refusals` (and what a body, a query, a token and the connection layer bring) listed
    per status, any other (a 500) under "default"."""
    implied = [*CONNECTION_REFUSALS, *refusals]
    if body:
        implied += BODY_REFUSALS
    if query:
        implied.append(ValidationFailed)
    if bearer:
        implied += [Unauthorised, ServiceUnavailable]
    doc: dict[str, Any] = {
        "summary": summary,
        "responses": {
            **{s: {"description": _description(schema), "content": _content(schema)} for s, schema in ok.items()},
            **refusal_responses(implied),
            "default": {"description": "problem (an internal error)", "content": PROBLEM_CONTENT},
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


def _description(schema: type[BaseModel] | dict[str, Any]) -> str:
    return schema.__name__ if isinstance(schema, type) else str(schema.get("title", "OK"))


def bearer_op(
    summary: str,
    *,
    answers: type[BaseModel] | dict[str, Any],
    body: str | None = None,
    ok: str = "200",
    params: tuple[str, ...] = (),
    query: dict[str, dict[str, Any]] | None = None,
    refusals: tuple[Refusal, ...] = (),
) -> dict[str, Any]:
    """One operation of the bearer-token APIs: `answers` is the model of its success answer, under each status
    of `ok` ("200,201": either)."""
    statuses = {status: answers for status in ok.split(",")}
    return operation(summary, ok=statuses, body=body, params=params, query=query, bearer=True, refusals=refusals)
