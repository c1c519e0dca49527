"""The server passes the graphql-http audit suite: no MUST failure, no SHOULD warning.

The suite is the npm package ``graphql-http`` (pinned in tests/graphql_http); this
test installs it with npm and runs it with Node against a real server. Without
Node the test is skipped, except under CI where it fails.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import fresh_database
from tests.support import ServerProcess, node_with_packages

AUDIT = Path(__file__).parent / "graphql_http"


@pytest.fixture(scope="module")
def node_audit() -> Path:
    return node_with_packages(AUDIT, "graphql-http", "the graphql-http audit")


def test_graphql_over_http_audit(node_audit, request, tmp_path):
    url = fresh_database("sqlite", request, tmp_path)
    server = ServerProcess(url)
    server.start()
    try:
        audit = subprocess.run([str(node_audit), "audit.mjs", server.url], cwd=AUDIT,
                               capture_output=True, text=True, timeout=120)
    finally:
        server.stop()
    assert audit.stdout.strip().endswith("0 warnings, 0 errors"), audit.stdout + audit.stderr
    assert audit.returncode == 0
