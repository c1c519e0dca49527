"""Every failure of every HTTP route, over a real server, has the one error body the API
guide's client code reads: ``{"errors": [{"message", "extensions": {"code"}}]}`` as JSON,
with the right status (GraphQL's own answers and these alike)."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import fresh_database
from tests.support import ServerProcess, failure, token

VIEWER = token("errors-fan")
ADMIN = token("errors-admin", "admin")
MUTATION = 'mutation { startLiveSession(input: {title: "GET"}) { userErrors { code } } }'


@pytest.fixture(scope="module")
def server(request, tmp_path_factory):
    process = ServerProcess(fresh_database("sqlite", request, tmp_path_factory.mktemp("errors")),
                            LIVEGIFTS_MAX_REQUEST_BYTES="4000")
    process.start()
    yield process
    process.stop()


def bearer(value: str) -> dict[str, str]:
    return {"authorization": f"Bearer {value}"}


# (what, method, path, keyword arguments, status, code, message or None for any)
FAILURES = [
    ("a batch", "POST", "/graphql", {"json": [{"query": "{ rateCard { version } }"}] * 2},
     400, "BAD_REQUEST", "A batch (a JSON array of requests) is not supported: send one "
                         "request per HTTP request."),
    ("a body that is not JSON", "POST", "/graphql",
     {"content": b"{not json", "headers": {"content-type": "application/json"}},
     400, "BAD_REQUEST", None),
    ("a body that is not UTF-8", "POST", "/graphql",
     {"content": b'{"query": "\xff"}', "headers": {"content-type": "application/json"}},
     400, "BAD_REQUEST", None),
    ("JSON null", "POST", "/graphql",
     {"content": b"null", "headers": {"content-type": "application/json"}},
     400, "BAD_REQUEST", None),
    ("a mutation over GET", "GET", "/graphql", {"params": {"query": MUTATION}},
     400, "BAD_REQUEST", "Mutations are not allowed over GET: send them with POST."),
    ("a body over the limit", "POST", "/graphql",
     {"json": {"query": "{ rateCard { version } }", "pad": "x" * 5000}},
     413, "PAYLOAD_TOO_LARGE", None),
    ("a bad token", "POST", "/graphql",
     {"json": {"query": "{ rateCard { version } }"}, "headers": bearer("garbage")},
     401, "UNAUTHENTICATED", "Invalid bearer token: it is not a well-formed JWT."),
    ("a method GraphQL does not take", "PUT", "/graphql", {"json": {}},
     405, "METHOD_NOT_ALLOWED", None),
    ("an unknown path", "GET", "/no/such/page", {}, 404, "NOT_FOUND", None),
    ("a statement without a token", "GET", "/statements/2026-11.csv", {},
     401, "UNAUTHENTICATED", None),
    ("a statement of no month", "GET", "/statements/nope.csv", {"headers": bearer(VIEWER)},
     400, "INVALID_INPUT", "month must look like 2026-11."),
    ("earnings from no date", "GET", "/earnings.csv",
     {"params": {"from": "yesterday"}, "headers": bearer(token("errors-star", "creator"))},
     400, "BAD_REQUEST", "from and to must be dates like 2026-11-01."),
    ("another brand's statement", "GET", "/brands/other/statements/2026-11.csv",
     {"headers": bearer(token("errors-rep", "brand", brand="mine"))},
     403, "FORBIDDEN", "Forbidden: a brand partner token sees only its own brand."),
    ("an unknown brand's sends", "GET", "/brands/nobody/sends.csv",
     {"params": {"from": "2026-11-01", "to": "2026-12-01"}, "headers": bearer(ADMIN)},
     404, "NOT_FOUND", "No brand 'nobody' is installed."),
    ("a forged payout webhook", "POST", "/webhooks/payouts/sandbox",
     {"content": b'{"payout_id": "x", "status": "paid"}',
      "headers": {"x-livegifts-signature": "sha256=forged"}},
     400, "BAD_REQUEST", "webhook rejected: the signature does not match the body"),
    ("a webhook of no provider", "POST", "/webhooks/payments/nobody", {"content": b"{}"},
     404, "NOT_FOUND", "no payment provider 'nobody' is installed"),
]


@pytest.mark.parametrize("what, method, path, arguments, status, code, message", FAILURES,
                         ids=[f[0] for f in FAILURES])
def test_every_failure_has_the_one_error_body(server, what, method, path, arguments, status,
                                              code, message):
    base = server.url.removesuffix("/graphql")
    response = httpx.request(method, base + path, timeout=30, **arguments)
    got_status, got_message, got_code = failure(response)
    assert (got_status, got_code) == (status, code), response.text
    if message is not None:
        assert got_message == message
    assert json.loads(response.content).keys() <= {"errors", "data"}
