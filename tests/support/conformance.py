"""Does an answer of the live server conform to the OpenAPI document? The status is one its operation
declares, the body matches that status's schema (the response model's, or the problem document with one of
the codes listed for the status). tests/support/http.py checks every answer it receives, so every
integration test that talks HTTP through it checks the document too.
"""

from __future__ import annotations

import functools
import re
import urllib.parse
from typing import Any

from jsonschema import Draft202012Validator


@functools.cache
def document() -> dict[str, Any]:
    """The document the server serves, built from the same code (it depends on nothing else but the URL)."""
    from server.api.ops import openapi_document

    return openapi_document("http://127.0.0.1")


@functools.cache
def _templates() -> list[tuple[re.Pattern[str], str]]:
    """Each documented path as a pattern: literal segments first, so /v1/offline/activations is not taken
    for /v1/activations/{activation_id}."""
    paths = sorted(document()["paths"], key=lambda p: (p.count("{"), -len(p)))
    return [(re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(p)) + "$"), p) for p in paths]


def operation(method: str, url: str) -> tuple[str, dict[str, Any]] | None:
    """The documented operation a request goes to, if any (a portal page or /metrics is none)."""
    path = urllib.parse.urlsplit(url).path
    for pattern, template in _templates():
        if pattern.match(path):
            op = document()["paths"][template].get(method.lower())
            return (template, op) if op is not None else None
    return None


@functools.cache
def _validator(template: str, method: str, status: str, media: str) -> Draft202012Validator:
    schema = document()["paths"][template][method]["responses"][status]["content"][media]["schema"]
    return Draft202012Validator({**schema, "components": document()["components"]})


def problems(method: str, url: str, status: int, content_type: str, body: Any) -> list[str]:
    """What is wrong with this answer for the document: nothing, for a request to no documented operation."""
    found = operation(method, url)
    if found is None:
        return []
    template, op = found
    where = f"{method.upper()} {template} answered {status}"
    responses = op["responses"]
    key = str(status) if str(status) in responses else "default"
    if key == "default" and status != 500:
        return [f"{where}, a status the document does not declare (it declares {', '.join(sorted(responses))})"]
    media = content_type.split(";")[0].strip()
    content = responses[key].get("content", {})
    if media not in content:
        return [f"{where} as {media or 'nothing'}, documented as {', '.join(content) or 'no body'}"]
    if media == "text/csv":
        return []
    validator = _validator(template, method.lower(), key, media)
    return [f"{where}: {error.message} at {'/'.join(map(str, error.absolute_path)) or 'the body'}"
            for error in validator.iter_errors(body)][:5]  # fmt: skip


def check(method: str, url: str, status: int, content_type: str, body: Any) -> None:
    wrong = problems(method, url, status, content_type, body)
    assert not wrong, "the answer does not conform to /openapi.json:\n" + "\n".join(wrong)
