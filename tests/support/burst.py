"""A burst of activations of new hosts against a running server, from threads, with send and answer times."""

from __future__ import annotations

import threading
import time
from typing import Any

from tests.support.agent import FakeAgent
from tests.support.http import post


class Burst:
    """Threads activating new hosts against the server until stopped; records when each request left."""

    def __init__(self, url: str, licences: list[dict[str, Any]], threads: int = 6) -> None:
        self.url = url
        self.licences = licences
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.done: list[tuple[float, float, str, FakeAgent, int]] = []  # sent, acknowledged, id, agent, licence
        self.failures: list[tuple[int, Any]] = []
        self.workers = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _run(self, index: int) -> None:
        n = 0
        while not self.stop.is_set():
            which = (index + n) % len(self.licences)
            n += 1
            agent = FakeAgent(hostname=f"burst-{index}-{n}")
            sent = time.monotonic()
            licence = self.licences[which]
            status, body = post(self.url + "/v1/activations", agent.activation_body(licence["key"], licence["product"]))
            acknowledged = time.monotonic()
            with self.lock:
                if status == 201:
                    self.done.append((sent, acknowledged, body["activation_id"], agent, which))
                else:
                    self.failures.append((status, body))

    def __enter__(self) -> Burst:
        for worker in self.workers:
            worker.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for worker in self.workers:
            worker.join(timeout=30)

    def count(self) -> int:
        with self.lock:
            return len(self.done)

    def wait_for(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.count() < count:
            assert time.monotonic() < deadline, f"only {self.count()} activations in {timeout}s: {self.failures[:3]}"
            time.sleep(0.01)
