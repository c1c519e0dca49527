"""Subscriptions as a front end's graphql-ws client sees them (the npm package, pinned in
tests/graphql_ws, run with Node against a real server): a document the server refuses
fails the client's subscription with the errors, instead of ending it silently."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import fresh_database
from tests.support import ServerProcess, node_with_packages, token

CLIENT = Path(__file__).parent / "graphql_ws"


@pytest.fixture(scope="module")
def node() -> Path:
    return node_with_packages(CLIENT, "graphql-ws", "the graphql-ws client test")


@pytest.fixture(scope="module")
def server(request, tmp_path_factory):
    process = ServerProcess(fresh_database("sqlite", request, tmp_path_factory.mktemp("ws")))
    process.start()
    yield process
    process.stop()


def subscribe(node: Path, server: ServerProcess, document: str) -> dict:
    ran = subprocess.run([str(node), "subscribe.mjs", server.url.replace("http", "ws", 1),
                          document, token("ws-client-fan")], cwd=CLIENT, capture_output=True,
                         text=True, timeout=60)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    return json.loads(ran.stdout)


@pytest.mark.parametrize("document, message", [
    ("subscription { liveSessionEvents(", "Syntax Error: Expected Name, found <EOF>."),
    ("subscription { nope }", "Cannot query field 'nope' on type 'Subscription'."),
], ids=["syntax error", "unknown field"])
def test_a_refused_document_fails_the_subscription_with_its_error(node, server, document,
                                                                  message):
    outcome = subscribe(node, server, document)
    assert (outcome["next"], outcome["complete"]) == ([], False)
    assert [error["message"] for error in outcome["error"]] == [message]
    assert not any("Traceback" in line or "strawberry.ws.task" in line for line in server.log)
