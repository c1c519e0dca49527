"""Work per request stays constant: statements per catalogue page, cached validation."""

from __future__ import annotations

from sqlalchemy import event

from app.graphql.context import Context
from app.graphql.schema import schema
from app.models import Brand, Gift

CATALOGUE = """query($first: Int) { gifts(first: $first) { edges { node {
  name coinPrice sponsored brand { slug name } } } } }"""


async def _add_sponsored_gifts(runtime, count: int) -> None:
    async with runtime.sessions() as session, session.begin():
        brands = [Brand(slug=f"brand-{n}", name=f"Brand {n}", plugin=f"plugin-{n}")
                  for n in range(5)]
        session.add_all(brands)
        await session.flush()
        session.add_all(Gift(sku=f"sponsored-{n}", name=f"Sponsored {n}", coin_price=10 + n,
                             image_url="https://cdn.example.com/g.webp", category="brand",
                             sort_order=n, active=True, brand_id=brands[n % 5].id,
                             plugin=brands[n % 5].plugin) for n in range(count))


async def _statements_for(runtime, first: int) -> tuple[int, list[dict]]:
    statements: list[str] = []

    def count(_connection, _cursor, statement, *_args) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    event.listen(runtime.engine.sync_engine, "before_cursor_execute", count)
    try:
        result = await schema.execute(CATALOGUE, {"first": first},
                                      context_value=Context(runtime=runtime))
    finally:
        event.remove(runtime.engine.sync_engine, "before_cursor_execute", count)
    assert result.errors is None, result.errors
    return len(statements), [edge["node"] for edge in result.data["gifts"]["edges"]]


async def test_a_catalogue_page_with_brands_costs_the_same_statements_at_any_size(runtime):
    await _add_sponsored_gifts(runtime, 100)
    few, few_gifts = await _statements_for(runtime, 5)
    many, many_gifts = await _statements_for(runtime, 100)
    assert len(few_gifts) == 5 and len(many_gifts) == 100
    assert {gift["brand"]["slug"] for gift in many_gifts} == {f"brand-{n}" for n in range(5)}
    assert all(gift["sponsored"] for gift in many_gifts)
    # One query for the page and one for all the brands on it, however long the page.
    assert few == many == 2


async def test_the_validation_cache_hits_for_a_document_seen_before(runtime):
    from app.graphql.limits import _validated as cache

    document = "query Repeated { rateCard { version } }"
    await schema.execute(document, context_value=Context(runtime=runtime))
    before = cache.cache_info()
    await schema.execute(document, context_value=Context(runtime=runtime))
    after = cache.cache_info()
    assert (after.hits - before.hits, after.misses - before.misses) == (1, 0)


async def test_one_connection_sees_rows_as_they_are_now_in_each_operation(runtime):
    """A WebSocket connection keeps one context: batching must not become a stale cache."""
    from strawberry.relay import to_base64

    from app.services import live
    from app.testing import go_live
    from tests.support import token

    stage = await go_live(runtime, "star")
    query = "query($id: ID!) { liveSession(id: $id) { status } }"
    variables = {"id": to_base64("LiveSession", stage.session_id)}
    connection = Context(runtime=runtime, authorization=f"Bearer {token('fan')}")
    before = await schema.execute(query, variables, context_value=connection)
    async with runtime.sessions() as session, session.begin():
        await live.end_session(session, stage.session_id, stage.creator_id)
    after = await schema.execute(query, variables, context_value=connection)
    assert before.data == {"liveSession": {"status": "LIVE"}}
    assert after.data == {"liveSession": {"status": "ENDED"}}
