"""How /openapi.json describes the API, and what a route declares so its operation is complete.

The convention, for every route (tests/test_docs.py checks the whole document against it):

    @bp.get("/jobs/<job_id>")
    @bp.input(schemas.WaitQuery, location="query")           # fields carry an `example`
    @bp.output(schemas.JobOut, example=examples.JOB_DONE)    # an example of the success body
    @bp.doc(summary="...", responses=errors(ErrorCode.JOB_NOT_FOUND, ErrorCode.INVALID_WAIT))

- `errors(...)` lists the codes a route can answer with (common/error_codes.py holds them all);
  it groups them by status, with one example per code and the headers the status carries.
- The operationId is the view function's name (set here), unless `@bp.doc(operation_id=...)`.
- An operation that can answer `unauthorized` is the one that needs the API key: it is marked
  so, and the security scheme appears, only when an API key is configured.
"""
from __future__ import annotations

import re

from apiflask import APIFlask
from apispec import APISpec, BasePlugin

from common.error_codes import ErrorCode
from common.settings import Settings
from webapp import examples, schemas
from webapp.guards import SECURITY_SCHEMES

ERROR_SCHEMA = "Error"
ERROR_REF = {"$ref": f"#/components/schemas/{ERROR_SCHEMA}"}
# Codes whose answers say when to try again.
RETRY_AFTER_CODES = {ErrorCode.TOO_MANY_REQUESTS, ErrorCode.OVERLOADED, ErrorCode.UNAVAILABLE}
PATH_PARAMETERS = {"job_id": {"description": "the `job_id` that `POST /api/v1/jobs` answered",
                              "schema": {"type": "string", "format": "uuid"}, "example": examples.JOB_ID}}
RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before sending the request again",
                               "schema": {"type": "integer", "minimum": 0}, "example": 5}}


def errors(*codes: ErrorCode) -> dict[int, dict]:
    """The error responses of an operation that can answer with `codes`: for `@bp.doc(responses=...)`."""
    codes = tuple(dict.fromkeys(codes))  # each once, in the order given
    responses: dict[int, dict] = {}
    for status in sorted({code.status for code in codes}):
        group = [code for code in codes if code.status == status]
        response = {
            "description": "\n".join(f"- `{code}`: {code.meaning}" for code in group),
            "content": {"application/json": {"schema": ERROR_REF, "examples": {
                code.value: {"value": {"error": {"code": code.value, "message": code.meaning}}} for code in group}}},
        }
        if RETRY_AFTER_CODES.intersection(group):
            response["headers"] = RETRY_AFTER
        responses[status] = response
    return responses


class ErrorSchemaPlugin(BasePlugin):
    """Registers the error body that every error response refers to (`ERROR_REF`)."""

    def init_spec(self, spec: APISpec) -> None:
        super().init_spec(spec)
        spec.components.schema(ERROR_SCHEMA, schema=schemas.ErrorOut)


def register(app: APIFlask, settings: Settings) -> None:
    app.spec_plugins.append(ErrorSchemaPlugin())
    app.config["SERVERS"] = [{"url": "/"}]  # the host the document was fetched from, whichever it is
    # Each error response is declared with its codes (`errors`); none are guessed by APIFlask.
    app.config.update(AUTO_404_RESPONSE=False, AUTO_VALIDATION_ERROR_RESPONSE=False, AUTO_AUTH_ERROR_RESPONSE=False)
    app.config["HTTP_ERROR_SCHEMA"] = app.config["VALIDATION_ERROR_SCHEMA"] = ERROR_REF

    @app.spec_processor
    def finish(spec: dict) -> dict:
        name_operations(app, spec)
        for operations in spec["paths"].values():
            for operation in operations.values():
                for parameter in operation["parameters"]:
                    if parameter["in"] == "path":
                        parameter.update(PATH_PARAMETERS.get(parameter["name"], {}))
                if "requestBody" in operation:
                    operation["requestBody"]["required"] = True  # an upload without a body is a mistake
                guard(operation, settings.api_key)
        if not settings.api_key:  # no key configured: no Authorize button
            spec.get("components", {}).pop("securitySchemes", None)
        return spec


def name_operations(app: APIFlask, spec: dict) -> None:
    """Each operation without an operationId gets its view function's name."""
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[^<:>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method, operation in spec["paths"].get(path, {}).items():
            if method.upper() in rule.methods:
                operation.setdefault("operationId", app.view_functions[rule.endpoint].__name__)


def guard(operation: dict, api_key: str) -> None:
    """Only an operation that can answer `unauthorized` needs the key, and only if one is set."""
    if "401" not in operation["responses"]:
        return
    if api_key:
        operation["security"] = [{name: []} for name in SECURITY_SCHEMES]
    else:
        del operation["responses"]["401"]
