"""Every refusal a handler can reach is declared by its operation in the OpenAPI document.

A static walk over the server's source: from each route's handler (and, for a handler made by a factory, the
functions it closes over) through every function it names or calls in server.api, server.services and
server.domain, collecting the domain errors raised or made (server.domain.errors) and the problems written
with a literal code (`problem_response(503, "not-ready", …)`). A method call (`x.activate(…)`) may be any
function of that name in the services or the domain: the walk over-approximates, never under. An error
caught in a function without being raised again does not leave it.

A new `raise SomethingElse(...)` in a service that a route reaches, without the operation declaring it,
fails here; so does an error class whose code or status changes under a declaration. The same walk over a
handler's own code checks its success side: the response models it answers through and their statuses.
"""

from __future__ import annotations

import ast
import functools
import inspect
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from server.api.openapi import declared_codes, refusal
from server.domain import errors

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("server/api", "server/services", "server/domain")
# Not API operations: HTML for people, Prometheus text, the document and its page, the bench's echo.
NOT_OPERATIONS = ("/portal", "/metrics", "/openapi.json", "/docs", "/bench")
ERRORS = {
    name: cls for name, cls in vars(errors).items() if isinstance(cls, type) and issubclass(cls, errors.DomainError)
}
Key = tuple[str, str]  # (module, function name)


@dataclass
class Function:
    refusals: set[tuple[int, str]] = field(default_factory=set)
    calls: set[Key] = field(default_factory=set)
    caught: set[type[errors.DomainError]] = field(default_factory=set)


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def _imports(tree: ast.Module) -> tuple[dict[str, str], dict[str, Key]]:
    """Names bound to server modules (`from server.services import terms as rules`) and to their functions."""
    modules: dict[str, str] = {}
    functions: dict[str, Key] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("server"):
            for alias in node.names:
                bound = alias.asname or alias.name
                if (ROOT / node.module.replace(".", "/") / f"{alias.name}.py").exists():
                    modules[bound] = f"{node.module}.{alias.name}"
                else:
                    functions[bound] = (node.module, alias.name)
    return modules, functions


def _caught(handler: ast.ExceptHandler) -> set[type[errors.DomainError]]:
    """The domain errors an except clause swallows or turns into another (none, if it raises them again)."""
    if any(isinstance(n, ast.Raise) and n.exc is None for n in ast.walk(handler)):
        return set()
    names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return {ERRORS[n.id] for n in names if isinstance(n, ast.Name) and n.id in ERRORS}


def _literal_problem(call: ast.Call) -> tuple[int, str] | None:
    name = call.func.id if isinstance(call.func, ast.Name) else getattr(call.func, "attr", None)
    if name == "problem_response" and len(call.args) >= 2:
        status, code = call.args[0], call.args[1]
        if isinstance(status, ast.Constant) and isinstance(status.value, int) and isinstance(code, ast.Constant):
            return status.value, str(code.value)
    return None


def _read(module: str, body: ast.AST, modules: dict[str, str], functions: dict[str, Key]) -> Function:
    found = Function()
    for node in ast.walk(body):
        if isinstance(node, ast.ExceptHandler):
            found.caught |= _caught(node)
        elif isinstance(node, ast.Raise) and isinstance(node.exc, ast.Name) and node.exc.id in ERRORS:
            found.refusals.add(refusal(ERRORS[node.exc.id]))
        elif isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name) and node.func.id in ERRORS:
                found.refusals.add(refusal(ERRORS[node.func.id]))  # made here: raised here or by a caller
            elif (literal := _literal_problem(node)) is not None:
                found.refusals.add(literal)
            elif isinstance(node.func, ast.Attribute) and not (
                isinstance(node.func.value, ast.Name) and node.func.value.id in modules
            ):
                found.calls.add(("*", node.func.attr))  # a method: whichever function has that name
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            # A call, or a function handed on (to `run`, `functools.partial`, `db.run`).
            found.calls.add(functions.get(node.id, (module, node.id)))
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
            found.calls.add((modules[node.value.id], node.attr))
    return found


@functools.cache
def _sources() -> dict[Key, tuple[ast.AST, dict[str, str], dict[str, Key]]]:
    """Every function and method of the packages, by module and name, with its module's imports."""
    found: dict[Key, tuple[ast.AST, dict[str, str], dict[str, Key]]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).glob("*.py")):
            module = _module_name(path)
            tree = ast.parse(path.read_text())
            modules, functions = _imports(tree)
            for node in tree.body:
                members = node.body if isinstance(node, ast.ClassDef) else [node]
                for member in members:
                    if isinstance(member, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        found[(module, member.name)] = (member, modules, functions)
    return found


@functools.cache
def source_index() -> dict[Key, Function]:
    return {key: _read(key[0], node, modules, functions) for key, (node, modules, functions) in _sources().items()}


@functools.cache
def _by_name() -> dict[str, list[Key]]:
    named: dict[str, list[Key]] = {}
    for module, name in source_index():
        if not module.startswith("server.api"):  # a method of a service or a rule, not of the HTTP layer
            named.setdefault(name, []).append((module, name))
    return named


def reachable(key: Key, seen: frozenset[Key] = frozenset()) -> set[tuple[int, str]]:
    """The (status, code) of every refusal the function may answer, through whatever it calls."""
    keys = _by_name().get(key[1], []) if key[0] == "*" else [key]
    found: set[tuple[int, str]] = set()
    for each in keys:
        function = source_index().get(each)
        if function is None or each in seen:
            continue
        swallowed = {refusal(cls) for cls in ERRORS.values() if any(issubclass(cls, c) for c in function.caught)}
        found |= function.refusals
        for callee in function.calls:
            found |= reachable(callee, seen | {each}) - swallowed
    return found


def _handler_keys(handler: Any) -> Iterator[Key]:
    """The function a route runs: a module's function, or the factory that made it and what it closes over."""
    handler = inspect.unwrap(handler)
    if "<locals>" not in handler.__qualname__:
        yield handler.__module__, handler.__name__
        return
    yield handler.__module__, handler.__qualname__.split(".")[0]
    for cell in handler.__closure__ or ():
        value = cell.cell_contents
        value = value.func if isinstance(value, functools.partial) else value
        if inspect.isfunction(value):
            yield value.__module__, value.__name__


def _operations() -> Iterator[tuple[str, str, Any]]:
    from server.app import create_app
    from server.settings import Settings

    app = create_app(Settings())  # builds the routes; no I/O until the app starts
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if route.method in ("HEAD", "OPTIONS", "*") or path.startswith(NOT_OPERATIONS):
            continue
        yield route.method.lower(), path, route.handler


@functools.cache
def _document() -> dict[str, Any]:
    from server.api.ops import openapi_document

    return openapi_document("http://127.0.0.1")


def _missing(method: str, path: str, handler: Any) -> dict[int, set[str]]:
    reached: set[tuple[int, str]] = set()
    for key in _handler_keys(handler):
        reached |= reachable(key)
    declared = declared_codes(_document()["paths"][path][method])
    missing: dict[int, set[str]] = {}
    for status, code in reached:
        if code not in declared.get(status, set()):
            missing.setdefault(status, set()).add(code)
    return missing


def test_every_refusal_a_handler_can_reach_is_declared_by_its_operation() -> None:
    undeclared = {
        f"{method.upper()} {path}": missing
        for method, path, handler in _operations()
        if (missing := _missing(method, path, handler))
    }
    assert undeclared == {}, "refusals reached but not declared (add them to the operation's refusals)"


@pytest.mark.parametrize(
    ("handler", "expected"),
    [
        (("server.api.licences", "renew"), {(404, "licence-not-found"), (403, "licence-revoked")}),
        (("server.api.agent", "create_activation"), {(409, "seats-exhausted"), (429, "too-many-attempts")}),
        (("server.api.agent", "refresh_activation"), {(401, "invalid-signature"), (409, "activation-rebound")}),
        (("server.api.paging", "read_page"), {(422, "invalid-cursor")}),
        (("server.api.ops", "readyz"), {(503, "not-ready")}),
    ],
)
def test_the_walk_finds_what_is_raised_far_below_a_handler(handler: Key, expected: set[tuple[int, str]]) -> None:
    """The check above can fail: these refusals are raised in services and rules several calls down."""
    assert expected <= reachable(handler)


def test_an_error_caught_and_turned_into_another_does_not_leave_the_function() -> None:
    # activation_in_scope turns another tenant's licence (licence-not-found) into activation-not-found.
    found = reachable(("server.services.moves", "activation_in_scope"))
    assert (404, "activation-not-found") in found and (404, "licence-not-found") not in found


def test_a_declared_list_missing_a_reached_code_is_reported() -> None:
    from server.api import licences

    op = _document()["paths"]["/v1/licences/{licence_id}/renewals"]["post"]
    saved = op["responses"]
    op["responses"] = {s: r for s, r in saved.items() if s != "409"}  # drop maintenance-lapsed and conflict
    try:
        assert _missing("post", "/v1/licences/{licence_id}/renewals", licences.renew) == {409: {"maintenance-lapsed"}}
    finally:
        op["responses"] = saved


def test_every_declared_code_is_a_code_the_server_has() -> None:
    """No typo in a declaration: each code is a domain error's or one the HTTP layer writes."""
    known = {cls.code for cls in ERRORS.values()} | {
        "header-timeout", "too-many-connections", "connections-exhausted", "body-incomplete", "body-timeout",
        "not-ready",
    }  # fmt: skip
    for path, item in _document()["paths"].items():
        for method, op in item.items():
            for status, codes in declared_codes(op).items():
                assert codes <= known, (method, path, status, codes - known)
                assert 400 <= status < 600


def _statuses(call: ast.Call) -> set[int]:
    """The status of `answer(Model, payload, status)`: 200 unless given, either branch of `a if … else b`."""
    given = call.args[2] if len(call.args) > 2 else next((k.value for k in call.keywords if k.arg == "status"), None)
    if given is None:
        return {200}
    branches = [given.body, given.orelse] if isinstance(given, ast.IfExp) else [given]
    return {b.value for b in branches if isinstance(b, ast.Constant) and isinstance(b.value, int)}


def answered(handler: Any) -> tuple[set[str], set[int]]:
    """The response models a handler names (server.api.schemas, or closed over) and the statuses it answers."""
    from server.api import schemas

    models: set[str] = set()
    statuses: set[int] = set()
    for key in _handler_keys(handler):
        node = _sources()[key][0] if key in _sources() else None
        if node is None:  # a unit closed over, not the handler's code
            continue
        for n in ast.walk(node):
            named = getattr(schemas, n.id, None) if isinstance(n, ast.Name) else None
            if isinstance(named, type) and issubclass(named, schemas.Answer) and named is not schemas.Answer:
                models.add(named.__name__)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name):
                if n.func.id == "answer":
                    statuses |= _statuses(n)
                elif n.func.id in ("page_response", "_page", "_renamed"):
                    statuses.add(200)
    for cell in inspect.unwrap(handler).__closure__ or ():
        value = cell.cell_contents
        if isinstance(value, type) and issubclass(value, schemas.Answer):
            models.add(value.__name__)
            statuses.add(200)
    return models, statuses


def test_every_handler_answers_the_models_and_statuses_its_operation_documents() -> None:
    """The model a handler passes its answer through, and the status it answers with, are the ones its
    operation documents. The agent's handlers build their answers without a model: tests/test_openapi_answers.py
    checks theirs against the document."""
    wrong = {}
    checked = 0
    for method, path, handler in _operations():
        models, statuses = answered(handler)
        if not models and handler.__module__ == "server.api.agent":
            continue
        successes = {int(s): r for s, r in _document()["paths"][path][method]["responses"].items() if s < "300"}
        documented = {r["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1] for r in successes.values()}
        checked += 1
        if models != documented or not statuses or not statuses <= set(successes):
            wrong[f"{method.upper()} {path}"] = (sorted(models), sorted(statuses), sorted(documented), set(successes))
    assert wrong == {}
    assert checked > 60


def test_the_answer_walk_reads_conditional_statuses_and_closures() -> None:
    from server.api import catalogue, licences

    assert answered(licences.change_licence) == ({"LicenceChange"}, {200, 201})
    assert answered(licences.issue_licence) == ({"IssuedLicence"}, {201})
    assert answered(catalogue.list_products) == ({"ProductPage"}, {200})
    switch = next(h for m, p, h in _operations() if (m, p) == ("post", "/v1/products/{product}/disable"))
    assert answered(switch) == ({"Product"}, {200})
