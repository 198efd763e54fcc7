"""Schemathesis generates requests from /openapi.json and checks the answers against it: no 5xx,
only documented status codes, bodies that match their schemas. Valid and invalid requests alike,
bounded to stay quick in CI."""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

# "Schema-valid data is accepted" cannot hold for uploads: any bytes are a valid `binary` to the
# schema, while the service rightly refuses bytes that are not an image (422, or a failed image).
EXCLUDED = [positive_data_acceptance]


def sent_as_generated(case) -> bool:
    """False for a form field made an empty list to break its type: multipart sends no part for it,
    so the request is the same as one without the field, and valid."""
    return not (isinstance(case.body, dict) and any(value == [] for name, value in case.body.items() if name != "file"))


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_api_matches_its_openapi_document(app, worker, mode):
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 6
    for operation in operations:
        if mode is GenerationMode.NEGATIVE and not (operation.body or operation.query):
            continue  # nothing to get wrong (e.g. GET /health; a job id is any string, answered 404 if unknown)
        @given(case=operation.as_strategy(generation_mode=mode).filter(sent_as_generated))
        @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def check(case):
            case.call_and_validate(excluded_checks=EXCLUDED)
        check()
