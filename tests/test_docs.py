"""/openapi.json is a complete, valid OpenAPI document, and /docs renders it offline in a real
Chromium, where "Try it out" runs a request against the service."""
from __future__ import annotations

import dataclasses
import json
import re

import pytest
import requests
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate
from playwright.sync_api import expect

from common.error_codes import ErrorCode
from harness import serve, valid_images
from webapp import create_app
from webapp.openapi import RETRY_AFTER_CODES



def document(app, base_url: str = "http://localhost") -> dict:
    response = app.test_client().get("/openapi.json", base_url=base_url)
    assert response.status_code == 200
    return response.get_json()


def operations(spec: dict):
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            yield f"{method.upper()} {path}", operation


def media_examples(media: dict) -> list:
    return ([media["example"]] if "example" in media else []) + [e["value"] for e in media.get("examples", {}).values()
                                                                 if "value" in e]


@pytest.fixture(scope="module")
def keyed_app(settings):
    return create_app(dataclasses.replace(settings, api_key="s3cret"))


def test_document_is_valid_openapi(app, keyed_app):
    for spec in (document(app), document(keyed_app)):
        validate(spec)  # raises on any violation of the OpenAPI 3.1 schema, with its path
        assert spec["openapi"].startswith("3.1")


def test_every_operation_has_an_id_and_examples(app):
    spec = document(app)
    ids = [operation.get("operationId") for _, operation in operations(spec)]
    assert None not in ids and len(set(ids)) == len(ids), ids
    for name, operation in operations(spec):
        for parameter in operation["parameters"]:
            if parameter["name"] == "Idempotency-Key":  # "Try it out" would send one fixed key with every request
                assert "example" not in parameter and "example" not in parameter["schema"], name
                continue
            assert "example" in parameter or "example" in parameter["schema"], (name, parameter["name"])
        if "requestBody" in operation:
            for media in operation["requestBody"]["content"].values():
                assert media.get("example") or media.get("examples"), name
        for status, response in operation["responses"].items():
            for media in response.get("content", {}).values():  # (a 204 has none)
                assert media_examples(media), (name, status)


def test_examples_match_their_schemas(app):
    """A sample that contradicts the contract would teach clients the wrong thing."""
    spec = document(app)
    checked = 0
    for name, operation in operations(spec):
        for status, response in operation["responses"].items():
            for media in response.get("content", {}).values():
                validator = OAS31Validator({**media["schema"], "components": spec["components"]})
                for example in media_examples(media):
                    errors = [e.message for e in validator.iter_errors(example)]
                    assert not errors, (name, status, errors)
                    checked += 1
    assert checked > 30


def test_error_codes_are_enumerated_from_the_one_list(app):
    spec = document(app)
    detail = spec["components"]["schemas"]["ErrorDetail"]
    assert detail["properties"]["code"]["enum"] == [code.value for code in ErrorCode]
    documented = {code for _, op in operations(spec) for status, response in op["responses"].items()
                  if status >= "400" for code in response["content"]["application/json"].get("examples", {})}
    assert {"job_not_found", "too_many_files", "overloaded", "not_an_image", "timeout"} <= documented


def test_headers_are_declared_where_returned(app):
    spec = document(app)
    accepted = spec["paths"]["/api/v1/jobs"]["post"]["responses"]["202"]
    assert accepted["headers"]["Location"]["required"] is True
    retry_codes = {code.value for code in RETRY_AFTER_CODES}
    declared = 0
    for name, operation in operations(spec):
        for status, response in operation["responses"].items():
            codes = set(response.get("content", {}).get("application/json", {}).get("examples", {}))
            if codes & retry_codes:
                assert "Retry-After" in response.get("headers", {}), (name, status)
                declared += 1
    assert declared >= 4  # 429 and 503 of both upload operations, 503 of the job status


def test_server_url_is_relative_whoever_asks_first(settings):
    app = create_app(settings)
    first = document(app, "http://first.example:8000")
    second = document(app, "https://second.example")
    assert first["servers"] == second["servers"] == [{"url": "/"}]


def test_security_scheme_only_with_an_api_key(app, keyed_app):
    spec = document(app)
    assert "securitySchemes" not in spec.get("components", {})
    assert all("security" not in op and "401" not in op["responses"] for _, op in operations(spec))

    keyed = document(keyed_app)
    scheme = keyed["components"]["securitySchemes"]["ApiKeyAuth"]
    assert scheme == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    guarded = {name for name, op in operations(keyed) if op.get("security") == [{"ApiKeyAuth": []}]}
    assert guarded == {name for name, op in operations(keyed) if "401" in op["responses"]}
    assert {"POST /api/v1/jobs", "POST /predict"} <= guarded and "GET /api/v1/jobs/{job_id}" not in guarded


def test_swagger_ui_assets_are_served_locally(app):
    client = app.test_client()
    page = client.get("/docs").get_data(as_text=True)
    links = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert "/docs-assets/swagger-ui-bundle.js" in links and all(link.startswith("/") for link in links), links
    for asset in ("swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "swagger-ui.css"):
        assert client.get(f"/docs-assets/{asset}").status_code == 200


@pytest.fixture(scope="module")
def docs_server(app):
    """The app on a real port; the docs and the classes need neither a worker nor a model run."""
    yield from serve(app)


def test_docs_page_renders_every_operation_and_runs_one(browser, docs_server, app):
    page = browser.new_page()
    offsite = []
    page.on("request", lambda request: offsite.append(request.url) if not request.url.startswith(docs_server) else None)
    page.goto(f"{docs_server}/docs")
    for name, operation in operations(document(app)):
        method, path = name.split(" ")
        block = page.locator(f"#operations-{operation['tags'][0]}-{operation['operationId']}")
        expect(block).to_contain_text(path, timeout=30_000)
        expect(block).to_contain_text(operation["summary"])
    expect(page.locator(".authorize")).to_have_count(0)  # no API key configured: no Authorize button

    classes = page.locator("#operations-Jobs-list_classes")
    classes.locator(".opblock-summary").click()
    classes.get_by_role("button", name="Try it out").click()
    classes.get_by_role("button", name="Execute").click()
    answer = classes.locator(".live-responses-table tbody tr").first
    expect(answer.locator(".response-col_status")).to_have_text("200", timeout=30_000)
    last_class = app.extensions["model_card"]["classes"][-1]  # the documented example lists only the first few
    expect(answer.locator(".response-col_description pre").first).to_contain_text(last_class)
    assert offsite == []


def test_try_it_out_submits_photo_after_photo_as_the_form_comes(browser, docs_server):
    """POST /api/v1/jobs from /docs with only a photo chosen: no callback_url or Idempotency-Key
    comes pre-filled (this service has no webhook secret; one key with another photo is a 409),
    and the empty callback_url field Swagger UI still sends counts as none."""
    page = browser.new_page()
    page.goto(f"{docs_server}/docs")
    submit = page.locator("#operations-Jobs-create_job")
    submit.locator(".opblock-summary").click()
    submit.get_by_role("button", name="Try it out").click()
    expect(submit.locator("input[placeholder='callback_url']")).to_have_value("")
    expect(submit.locator("input[placeholder='Idempotency-Key']")).to_have_value("")
    submit.locator("input[placeholder='wait']").fill("0")  # no worker here: answered queued at once
    jobs = []
    for path, _ in valid_images(2):
        submit.locator("input[type=file]").set_input_files(str(path))
        submit.get_by_role("button", name="Execute").click()
        answer = submit.locator(".live-responses-table tbody tr").first
        expect(answer.locator(".response-col_status")).to_have_text("202", timeout=30_000)
        body = answer.locator(".response-col_description pre").first
        expect(body).not_to_contain_text(jobs[-1] if jobs else "-no job yet-")
        jobs.append(json.loads(body.inner_text())["job_id"])
    assert len(set(jobs)) == 2
    for job_id in jobs:  # nothing left queued for the workers of later tests
        assert requests.delete(f"{docs_server}/api/v1/jobs/{job_id}", timeout=10).status_code == 200
