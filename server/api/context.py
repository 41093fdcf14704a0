"""Typed application keys shared by the handlers."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from keys.keyring import Keyring
from server.db.database import Database
from server.services.activation import ActivationService
from server.services.licensing import LicensingService
from server.settings import Settings
from server.signing import TokenSigner


@dataclass
class Services:
    db: Database
    activations: ActivationService
    licensing: LicensingService


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.activations = Counter(
            "tessera_activations", "Activation requests by outcome", ["outcome"], registry=self.registry
        )
        self.tokens_signed = Counter("tessera_tokens_signed", "Activation tokens signed", registry=self.registry)
        self._by_outcome = {o: self.activations.labels(o) for o in ("created", "existing", "error")}

    def count_activation(self, outcome: str) -> None:
        self._by_outcome[outcome].inc()


SETTINGS = web.AppKey("settings", Settings)
SERVICES = web.AppKey("services", Services)
SIGNER = web.AppKey("signer", TokenSigner)
KEYRING = web.AppKey("keyring", Keyring)
METRICS = web.AppKey("metrics", Metrics)


def client_address(request: web.Request) -> str:
    return request.remote or "unknown"
