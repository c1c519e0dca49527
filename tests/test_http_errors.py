"""Every failure of every HTTP route, over a real server, has the one error body the API
guide's client code reads: ``{"errors": [{"message", "extensions": {"code"}}]}`` as JSON,
with the right status (GraphQL's own answers and these alike). Each failure is read twice:
by Python, and by the guide's own JavaScript (``ApiError`` and ``graphql`` in docs/api.md,
taken from the page, not copied) run in Node."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import fresh_database
from tests.support import REQUIRE_POSTGRES, ServerProcess, bearer, failure, token

VIEWER = token("errors-fan")
ADMIN = token("errors-admin", "admin")
HASTY = token("errors-hasty")
MUTATION = 'mutation { startLiveSession(input: {title: "GET"}) { userErrors { code } } }'
RATE_LIMIT = 3  # requests a minute per user, so a few requests reach it
GUIDE = Path(__file__).resolve().parents[1] / "docs" / "api.md"


@pytest.fixture(scope="module")
def server(request, tmp_path_factory):
    # A readiness timeout of 0 s fails every /ready check (the database's answer always
    # comes later), as a database that does not answer in time would; test_observability
    # shows the same 503 with the database gone.
    process = ServerProcess(fresh_database("sqlite", request, tmp_path_factory.mktemp("errors")),
                            LIVEGIFTS_MAX_REQUEST_BYTES="4000",
                            LIVEGIFTS_RATE_LIMIT_PER_USER=str(RATE_LIMIT),
                            LIVEGIFTS_READY_TIMEOUT_SECONDS="0")
    process.start()
    yield process
    process.stop()


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
    ("a form instead of JSON", "POST", "/graphql", {"data": {"query": "{ __typename }"}},
     415, "UNSUPPORTED_MEDIA_TYPE", "Unsupported content type: send application/json."),
    ("a mutation over GET", "GET", "/graphql", {"params": {"query": MUTATION}},
     400, "BAD_REQUEST", "Mutations are not allowed over GET: send them with POST."),
    ("a body over the limit", "POST", "/graphql",
     {"json": {"query": "{ rateCard { version } }", "pad": "x" * 5000}},
     413, "PAYLOAD_TOO_LARGE", None),
    ("a bad token", "POST", "/graphql",
     {"json": {"query": "{ rateCard { version } }"}, "headers": bearer("garbage")},
     401, "UNAUTHENTICATED", "Invalid bearer token: it is not a well-formed JWT."),
    ("over the rate limit", "POST", "/graphql",
     {"json": {"query": "{ viewer { name } }"}, "headers": bearer(HASTY)},
     429, "RATE_LIMITED", re.compile(rf"Rate limit reached: at most {RATE_LIMIT} requests a "
                                     r"minute per user\. Retry in \d+ s\.")),
    ("a method GraphQL does not take", "PUT", "/graphql", {"json": {}},
     405, "METHOD_NOT_ALLOWED", None),
    ("an unknown path", "GET", "/no/such/page", {}, 404, "NOT_FOUND", None),
    ("not ready", "GET", "/ready", {},
     503, "SERVICE_UNAVAILABLE", "Not ready: database: no answer within 0 s."),
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
IDS = [f[0] for f in FAILURES]
# Over the rate limit, a request is repeated until refused: twice the limit and one more
# is enough even when a new one-minute window opens in between.
REPEAT = {"over the rate limit": 2 * RATE_LIMIT + 1}
# /ready's checks come beside the errors, for operators.
EXTRA_KEYS = {"not ready": {"status", "failing", "checks"}}


def said(message: str | re.Pattern[str] | None, got: str) -> bool:
    if isinstance(message, re.Pattern):
        return message.fullmatch(got) is not None
    return bool(got) and message in (None, got)


@pytest.mark.parametrize("what, method, path, arguments, status, code, message", FAILURES,
                         ids=IDS)
def test_every_failure_has_the_one_error_body(server, what, method, path, arguments, status,
                                              code, message):
    base = server.url.removesuffix("/graphql")
    for _ in range(REPEAT.get(what, 1)):
        response = httpx.request(method, base + path, timeout=30, **arguments)
        if response.status_code >= 400:
            break
    got_status, got_message, got_code = failure(response)
    assert (got_status, got_code) == (status, code), response.text
    assert said(message, got_message), got_message
    if status == 429:
        assert int(response.headers["retry-after"]) > 0
    assert json.loads(response.content).keys() <= {"errors", "data", *EXTRA_KEYS.get(what, ())}


def _guide_client() -> str:
    """The API guide's fetch example up to the end of its ``graphql`` function: the
    ``ApiError`` class and the function that throws it."""
    guide = GUIDE.read_text(encoding="utf-8")
    block = next(code for code in re.findall(r"^```js\n(.*?)^```", guide, re.M | re.S)
                 if "async function graphql(" in code)
    start = block.index("async function graphql(")
    return block[:block.index("\n}\n", start) + 3]


# Each request is sent by the guide's graphql(): its fetch is swapped for one that sends the
# failing request of the table instead, so the guide's code reads each failure as it comes.
RUNNER = """
import { readFileSync } from "node:fs";
const realFetch = globalThis.fetch;
const reports = {};
for (const r of JSON.parse(readFileSync(0, "utf8"))) {
  globalThis.fetch = async () => {
    let response;
    for (let i = 0; i < r.repeat; i++) {
      response = await realFetch(r.url, { method: r.method, headers: r.headers,
                                          body: r.body && Buffer.from(r.body, "base64") });
      if (response.status >= 400) return response;
      await response.arrayBuffer();
    }
    return response;
  };
  try {
    reports[r.what] = { returned: await graphql("{ __typename }", {}) };
  } catch (error) {
    reports[r.what] = { type: error.constructor.name, status: error.status, code: error.code,
                        message: error.message, retryAfter: error.retryAfter };
  }
}
console.log(JSON.stringify(reports));
"""


def test_the_api_guides_client_code_reads_every_failure(server, tmp_path):
    node = shutil.which("node")
    if node is None:
        if REQUIRE_POSTGRES:  # CI runs every external check
            pytest.fail("node is needed to run the API guide's client code", pytrace=False)
        pytest.skip("node is not installed: the API guide's client code was not run")
    base = server.url.removesuffix("/graphql")
    requests = []
    for what, method, path, arguments, *_ in FAILURES:
        built = httpx.Request(method, base + path, **arguments)
        requests.append({"what": what, "method": method, "url": str(built.url),
                         "headers": {k: v for k, v in built.headers.items()
                                     if k not in ("host", "content-length")},
                         "body": base64.b64encode(built.read()).decode() if built.content
                         else None,
                         "repeat": REPEAT.get(what, 1)})
    script = tmp_path / "client.mjs"
    script.write_text(_guide_client() + RUNNER, encoding="utf-8")
    ran = subprocess.run([node, str(script)], input=json.dumps(requests), capture_output=True,
                         text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    reports = json.loads(ran.stdout)
    for what, _, _, _, status, code, message in FAILURES:
        report = reports[what]
        assert (report.get("type"), report.get("status"), report.get("code")) == \
            ("ApiError", status, code), f"{what}: {report}"
        assert said(message, report["message"]), f"{what}: {report}"
        if status == 429:
            assert report["retryAfter"] > 0, report
