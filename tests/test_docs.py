"""The documentation cannot drift: every GraphQL example in docs/ and the README validates
against the schema, and every reading one runs against a real server with the demo data;
every JavaScript example parses, the operator guide lists every setting with its default,
and every relative link resolves."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from graphql import GraphQLSyntaxError, parse, validate

from app.graphql.schema import schema
from app.settings import DEVELOPMENT_SECRET, Settings
from tests.conftest import REQUIRE_POSTGRES

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.M)
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def fences(language: str) -> list[tuple[str, str]]:
    """(page:line, code) of every fenced block of ``language`` in the pages."""
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in re.finditer(rf"^```{language}\n(.*?)^```", text, re.M | re.S):
            line = text.count("\n", 0, match.start()) + 1
            found.append((f"{page.relative_to(ROOT)}:{line}", match.group(1)))
    return found


@pytest.mark.parametrize(("where", "example"), fences("graphql"),
                         ids=[where for where, _ in fences("graphql")])
def test_graphql_example_validates_against_the_schema(where, example):
    try:
        document = parse(example)
    except GraphQLSyntaxError as error:
        pytest.fail(f"{where}: the example does not parse: {error.message}", pytrace=False)
    errors = [error.message for error in validate(schema._schema, document)]
    assert errors == [], f"{where}: the example does not validate: {errors}"


def test_the_documentation_has_graphql_examples():
    pages = {where.split(":")[0] for where, _ in fences("graphql")}
    assert {"docs/api.md", "README.md"} <= pages


@pytest.mark.parametrize(("where", "example"), fences("js"),
                         ids=[where for where, _ in fences("js")])
def test_javascript_example_parses(where, example, tmp_path):
    node = shutil.which("node")
    if node is None:
        if REQUIRE_POSTGRES:  # CI runs every external check
            pytest.fail("node is needed to check the JavaScript examples", pytrace=False)
        pytest.skip("node is not installed: the JavaScript examples were not checked")
    script = tmp_path / "example.mjs"
    script.write_text(example)
    check = subprocess.run([node, "--check", str(script)], capture_output=True, text=True)
    assert check.returncode == 0, f"{where}: {check.stderr}"


def _documented_default(value: object) -> str | None:
    """How the operator guide writes a default, or None where it explains it in words."""
    if value is None or value == "" or value == DEVELOPMENT_SECRET:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(getattr(value, "value", value))


def test_every_setting_is_documented_with_its_default():
    guide = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \| (.+?) \|", guide, re.M))
    for name, field in Settings.model_fields.items():
        variable = field.validation_alias.choices[0] if field.validation_alias \
            else f"LIVEGIFTS_{name.upper()}"
        assert variable in rows, f"docs/operations.md does not document {variable}"
        default = _documented_default(field.default)
        if default is not None:
            assert rows[variable] == f"`{default}`", \
                f"docs/operations.md gives {variable} the default {rows[variable]}, not {default}"


def _prose(page: Path) -> str:
    """The page without its code blocks."""
    return FENCE.sub("", page.read_text(encoding="utf-8"))


def _anchor(heading: str) -> str:
    """The anchor a Markdown renderer gives a heading, as GitHub makes it."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def _links() -> list[tuple[Path, str]]:
    return [(page, target) for page in PAGES
            for target in LINK.findall(_prose(page))
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target)]  # skip https:, mailto: ...


@pytest.mark.parametrize(("page", "target"), _links(),
                         ids=lambda v: str(v.relative_to(ROOT)) if isinstance(v, Path) else v)
def test_relative_link_resolves(page, target):
    path, _, anchor = target.partition("#")
    linked = (page.parent / path).resolve() if path else page
    assert linked.exists(), f"{page.relative_to(ROOT)} links to {target}, which does not exist"
    if anchor and linked.suffix == ".md":
        anchors = {_anchor(heading) for heading in HEADING.findall(_prose(linked))}
        assert anchor in anchors, \
            f"{page.relative_to(ROOT)} links to #{anchor}, not a heading of {linked.name}"


def _queries() -> list[tuple[str, str]]:
    """Every example that reads (a query), with where it is."""
    from graphql import OperationDefinitionNode

    return [(where, example) for where, example in fences("graphql")
            if all(isinstance(d, OperationDefinitionNode) and d.operation.value == "query"
                   for d in parse(example).definitions)]


@pytest.fixture(scope="module")
def demo(request, tmp_path_factory):
    from tests.conftest import fresh_database
    from tests.support import ServerProcess

    process = ServerProcess(fresh_database("sqlite", request, tmp_path_factory.mktemp("docs")),
                            LIVEGIFTS_SEED_DEMO_DATA="true",
                            LIVEGIFTS_PLUGIN_MODULES="tests.sample_plugins.acme:plugin")
    process.start()
    yield process
    process.stop()


@pytest.mark.parametrize(("where", "example"), _queries(), ids=[w for w, _ in _queries()])
def test_every_query_example_runs_against_a_real_server(demo, where, example):
    """Each reading example, as written, answers without an error from a server with the
    demo data: an admin's token (a brand partner's for a brand's own fields), and the
    variables a reader would pass (this month, the demo stream's ids)."""
    from datetime import UTC, datetime

    import httpx

    from tests.support import token

    def run(query: str, variables: dict | None, bearer: str) -> dict:
        return httpx.post(demo.url, json={"query": query, "variables": variables},
                          headers={"authorization": f"Bearer {bearer}"}, timeout=30).json()

    admin = token("docs-admin", "admin")
    found = run("{ gifts(first: 1) { edges { node { id } } } brands { slug } "
                "liveSessions(status: LIVE, first: 1) { edges { node { id creator { id } } } } }",
                None, admin)["data"]
    [stream] = [edge["node"] for edge in found["liveSessions"]["edges"]]
    today = datetime.now(UTC).date()
    variables = {"id": found["gifts"]["edges"][0]["node"]["id"], "after": None,
                 "endCursor": None, "session": stream["id"], "creator": stream["creator"]["id"],
                 "month": today.strftime("%Y-%m"), "from": today.replace(day=1).isoformat(),
                 "to": None}
    bearer = admin
    if "campaign" in example:  # a brand partner's own report
        bearer = token("docs-rep", "brand", brand="acme")
    body = run(example, variables, bearer)
    assert "errors" not in body, f"{where}: {body['errors']}"
    assert body["data"], where
