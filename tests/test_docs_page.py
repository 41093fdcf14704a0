"""GET /docs through the real server: every documented operation and request body on one page, nothing
loaded from anywhere else."""

from __future__ import annotations

import json
import re
import urllib.request

from tests.conftest import LiveServer


def test_the_docs_page_lists_every_operation_and_loads_nothing_from_elsewhere(live_server: LiveServer) -> None:
    with urllib.request.urlopen(live_server.url + "/openapi.json", timeout=10) as answer:
        document = json.load(answer)
    with urllib.request.urlopen(live_server.url + "/docs", timeout=10) as answer:
        assert answer.status == 200 and answer.headers["Content-Type"].startswith("text/html")
        assert "default-src 'none'" in answer.headers["Content-Security-Policy"]
        page = answer.read().decode()
    for path, item in document["paths"].items():
        for method, op in item.items():
            assert f'id="{op["operationId"]}"' in page, (method, path)
            assert path.replace("{", "").replace("}", "") in page.replace("{", "").replace("}", "")
    for name in ("LicenceChangeBody", "PlanUpdateBody", "ActivationRequest"):
        assert f'id="model-{name}"' in page
    external = re.findall(r'(?:src|href)="(https?:)?//', page)
    assert external == [] and "<script" not in page


def test_the_docs_page_shows_each_operations_answer_models_and_problem_codes() -> None:
    from server.api.docs import render
    from server.api.openapi import declared_codes
    from server.api.ops import openapi_document

    document = json.loads(json.dumps(openapi_document("http://127.0.0.1")))
    page = render(document).decode()
    for path, item in document["paths"].items():
        for method, op in item.items():
            section = page[page.index(f'id="{op["operationId"]}"') :].split("</section>", 1)[0]
            for status, response in op["responses"].items():
                if status.startswith("2"):
                    model = response["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
                    assert f'<a href="#model-{model}">{model}</a>' in section, (method, path, status)
                    assert f'id="model-{model}"' in page
            for status, codes in declared_codes(op).items():
                row = section[section.index(f'<tr class="refusal"><td>{status}</td>') :].split("</tr>", 1)[0]
                assert all(f"<code>{code}</code>" in row for code in codes), (method, path, status)
    assert 'id="model-Problem"' in page
