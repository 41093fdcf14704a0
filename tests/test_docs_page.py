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
