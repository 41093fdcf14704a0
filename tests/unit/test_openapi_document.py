"""The OpenAPI document: valid 3.1, and every operation named, tagged and with its security stated."""

from __future__ import annotations

from openapi_spec_validator import validate

from server.api.ops import openapi_document

METHODS = {"get", "post", "put", "delete", "patch"}


def operations() -> list[tuple[str, str, dict]]:
    doc = openapi_document("http://127.0.0.1:1")
    return [(p, m, op) for p, ms in doc["paths"].items() for m, op in ms.items() if m in METHODS]


def test_document_validates_as_openapi_3_1() -> None:
    validate(openapi_document("http://127.0.0.1:1"))


def test_every_operation_has_a_unique_operation_id_tags_and_security() -> None:
    ops = operations()
    ids = [op["operationId"] for _, _, op in ops]
    assert len(ids) == len(set(ids)), "operationIds must be unique"
    for path, method, op in ops:
        assert op["tags"], (method, path)
        assert isinstance(op["security"], list), (method, path)


def test_bearer_operations_require_the_bearer_scheme_and_public_ones_none() -> None:
    by_key = {(p, m): op for p, m, op in operations()}
    assert by_key[("/v1/licences", "get")]["security"] == [{"bearer": []}]
    assert by_key[("/v1/activations", "post")]["security"] == []
    assert by_key[("/healthz", "get")]["security"] == []
