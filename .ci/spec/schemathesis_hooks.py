"""Schemathesis hooks for `.ci/check-spec`.

One check replaces the built-in `positive_data_acceptance`: the gateway itself must accept every
request its schema allows, but a provider may still refuse one for reasons no schema can state
(gu1 does not know the entity id passed in `subject.provider_refs`, say). Such a refusal is the
documented 422 with code `provider_rejected` and the provider's own `provider_code`; any other
refusal of schema-valid data is a disagreement between the spec and the code, and fails the run.
"""

import schemathesis
from schemathesis.specs.openapi.checks import positive_data_acceptance


def _problem_code(response):
    try:
        body = response.json()
    except Exception:
        return None
    return body.get("code") if isinstance(body, dict) else None


@schemathesis.check
def gateway_accepts_what_its_schema_allows(ctx, response, case):
    try:
        return positive_data_acceptance(ctx, response, case)
    except AssertionError:
        if response.status_code == 422 and _problem_code(response) == "provider_rejected":
            return None
        raise
