"""Final touches to /openapi.json that the decorators cannot express."""
from __future__ import annotations

from apiflask import APIFlask

from common.settings import Settings


def register(app: APIFlask, settings: Settings) -> None:
    @app.spec_processor
    def finish(spec: dict) -> dict:
        for operations in spec["paths"].values():
            for operation in operations.values():
                if "requestBody" in operation:
                    operation["requestBody"]["required"] = True  # an upload without a body is a mistake
                if not settings.api_key:  # no key configured: do not claim that one is needed
                    operation.pop("security", None)
        if not settings.api_key:
            spec.get("components", {}).get("securitySchemes", {}).pop("ApiKeyAuth", None)
        ready = spec["paths"]["/ready"]["get"]["responses"]  # not ready: the same shape, not an error
        ready["503"]["content"] = ready["200"]["content"]
        return spec
