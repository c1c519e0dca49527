"""The Alembic migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from app.models import metadata


async def test_migrated_database_matches_the_models(runtime):
    async with runtime.engine.connect() as connection:
        differences = await connection.run_sync(
            lambda sync: compare_metadata(
                MigrationContext.configure(sync, opts={"compare_type": True}), metadata))
        tables = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    assert differences == [], f"models and migrations disagree: {differences}"
    assert set(metadata.tables) <= tables


async def test_spending_counted_before_the_counter_existed_is_carried_over(runtime):
    """Revision 0006 fills each viewer's day and month spending from the receipts."""
    from alembic import command
    from sqlalchemy import select

    from app.migrate import alembic_config, upgrade
    from app.models import ViewerSpend
    from tests.gifting_support import new_viewer, send, stage

    where = await stage(runtime)
    fans = [await new_viewer(runtime, f"fan{n}", 1000) for n in range(3)]
    for n, fan in enumerate(fans):
        for _ in range(n + 1):
            await send(runtime, fan, where, "doughnut")  # 30 coins

    async def spend() -> list[tuple]:
        async with runtime.sessions() as session:
            return sorted((await session.execute(select(
                ViewerSpend.sender_id, ViewerSpend.period, ViewerSpend.period_start,
                ViewerSpend.coins))).all())

    maintained = await spend()
    assert [coins for *_, coins in maintained] == [30, 30, 60, 60, 90, 90]
    async with runtime.engine.begin() as connection:
        await connection.run_sync(
            lambda sync: command.downgrade(alembic_config(sync), "0005"))
    await upgrade(runtime.engine)
    assert await spend() == maintained


async def test_relay_positions_survive_a_downgrade_and_upgrade(runtime, monkeypatch):
    """Revision 0014 turns the per-event published flags into relay positions (and back):
    an event never published stays after its stream's position, so the relay still
    publishes it; relayed ones are not relayed again."""
    from alembic import command
    from sqlalchemy import select

    from app.migrate import alembic_config, upgrade
    from app.models import EventRelay
    from tests.gifting_support import new_viewer, send, stage

    where = await stage(runtime)
    fan = await new_viewer(runtime, "fan", 100)
    await send(runtime, fan, where, "rose")
    await runtime.relay.note()

    async def unreachable(events):
        raise ConnectionError("Redis is unreachable")

    monkeypatch.setattr(runtime.bus, "publish_all", unreachable)
    await send(runtime, fan, where, "rose")  # committed, never published

    async def positions() -> list[tuple]:
        async with runtime.sessions() as session:
            return sorted((await session.execute(select(EventRelay.stream,
                                                        EventRelay.relayed_seq))).all())

    before = await positions()
    stream = f"session:{where.session_id}"
    assert (stream, 3) in before  # SessionStarted, GiftSent, TopGiftersChanged; not the 2nd
    async with runtime.engine.begin() as connection:
        await connection.run_sync(
            lambda sync: command.downgrade(alembic_config(sync), "0013"))
    await upgrade(runtime.engine)
    assert await positions() == before


async def _keys_and_rows(runtime, tables: tuple[str, ...]) -> dict[str, tuple[list[str], int]]:
    """Each table's foreign keys (the tables they refer to, sorted) and its count of rows."""
    async with runtime.engine.connect() as connection:
        keys = await connection.run_sync(lambda sync: {
            table: sorted(key["referred_table"] for key in inspect(sync).get_foreign_keys(
                table)) for table in tables})
        rows = {table: (await connection.exec_driver_sql(
            f"SELECT count(*) FROM {table}")).scalar() for table in tables}
    return {table: (keys[table], rows[table]) for table in tables}


async def test_the_counters_foreign_keys_go_and_come_back_with_their_rows(runtime):
    """Revision 0020 drops the foreign keys of the leaderboard totals and spending
    counters, keeping every row (SQLite copies each table); its downgrade restores them."""
    from alembic import command

    from app.migrate import alembic_config, upgrade
    from tests.gifting_support import give_coins, new_viewer, send, stage

    fan, where = await new_viewer(runtime, "fk-fan"), await stage(runtime, "fk-creator")
    await give_coins(runtime, fan, 100)
    await send(runtime, fan, where, "rose", 3)
    counters = ("supporter_total", "creator_total", "session_gifter_total", "viewer_spend")

    after = await _keys_and_rows(runtime, counters)
    assert all(keys == [] and rows > 0 for keys, rows in after.values()), after
    async with runtime.engine.begin() as connection:
        await connection.run_sync(lambda sync: command.downgrade(alembic_config(sync), "0019"))
    before = await _keys_and_rows(runtime, counters)
    assert before == {"supporter_total": (["app_user", "app_user"], after["supporter_total"][1]),
                      "creator_total": (["app_user"], after["creator_total"][1]),
                      "session_gifter_total": (["app_user", "live_session"],
                                               after["session_gifter_total"][1]),
                      "viewer_spend": (["app_user"], after["viewer_spend"][1])}
    await upgrade(runtime.engine)
    assert await _keys_and_rows(runtime, counters) == after


async def test_the_default_gifts_pictures_move_to_this_server_and_back(runtime):
    """Revision 0016 points the default gifts seeded with the placeholder CDN at the
    pictures livegifts serves, and leaves a picture an admin chose alone."""
    from alembic import command
    from sqlalchemy import select, update

    from app.migrate import alembic_config, upgrade
    from app.models import Gift
    from app.services.catalogue import seed_default_gifts

    async with runtime.sessions() as session, session.begin():
        await seed_default_gifts(session)
        await session.execute(update(Gift).where(Gift.sku == "lion")
                              .values(image_url="https://art.example.com/lion.png"))

    async def pictures() -> dict[str, str]:
        async with runtime.sessions() as session:
            return dict((await session.execute(select(Gift.sku, Gift.image_url))).all())

    async with runtime.engine.begin() as connection:
        await connection.run_sync(
            lambda sync: command.downgrade(alembic_config(sync), "0015"))
    before = await pictures()
    assert before["rose"] == "https://cdn.example.com/livegifts/gifts/rose.webp"
    await upgrade(runtime.engine)
    after = await pictures()
    assert after["rose"] == "/static/gifts/rose.svg"
    assert after["lion"] == "https://art.example.com/lion.png"


async def test_brand_transfers_made_before_their_records_get_them(database_url):
    """Revision 0017 gives every brand funding and settlement made before it its record,
    with the brand and the coins from its ledger entries (who made it was not kept); the
    audit then finds each transaction's source."""
    from alembic import command
    from sqlalchemy import select

    from app.migrate import alembic_config, upgrade
    from app.models import BrandTransfer
    from app.services.brands import settle_revenue
    from app.testing import audit, new_viewer
    from tests.gifting_support import send
    from tests.sample_plugins.acme import Acme
    from tests.test_plugins import core_with, funded_stage

    async with core_with(database_url, ("acme", Acme())) as runtime:
        stage, fan = await funded_stage(runtime, budget=1_000)
        await send(runtime, fan, stage, "acme-rocket")  # the brand's share: 5 coins
        admin = await new_viewer(runtime, "settling-admin")
        await settle_revenue(runtime.sessions, admin_id=admin, slug="acme", coins=4,
                             idempotency_key="settle")

        async def transfers() -> list[tuple]:
            async with runtime.sessions() as session:
                return (await session.execute(select(
                    BrandTransfer.brand_id, BrandTransfer.kind, BrandTransfer.coins,
                    BrandTransfer.admin_id, BrandTransfer.transaction_id)
                    .order_by(BrandTransfer.id))).all()

        kept = await transfers()
        assert [(kind, coins, admin_id is not None) for _, kind, coins, admin_id, _ in kept] \
            == [("funding", 1_000, True), ("settlement", 4, True)]
        async with runtime.engine.begin() as connection:
            await connection.run_sync(
                lambda sync: command.downgrade(alembic_config(sync), "0016"))
        await upgrade(runtime.engine)
        assert await transfers() == [(brand, kind, coins, None, transaction)
                                     for brand, kind, coins, _, transaction in kept]
        async with runtime.sessions() as session:
            assert await audit(session) == []


async def test_receipts_and_entries_lose_their_foreign_keys_and_keep_their_rows(runtime):
    """Revision 0021 drops the gift receipts' and ledger entries' foreign keys, keeping every
    row, a clawback's key to its receipt, the entries' immutability (SQLite copies the
    tables) and a clean audit; its downgrade restores the keys."""
    from alembic import command

    from app.ledger import audit
    from app.migrate import alembic_config, upgrade
    from tests.gifting_support import new_viewer, send, stage
    from tests.money_support import buy, store_webhook
    from tests.support import execute_sql

    where, fan = await stage(runtime, "fk-creator"), await new_viewer(runtime, "fk-fan")
    await buy(runtime, fan, "coins-700", txn="fk-card")
    await send(runtime, fan, where, "doughnut", quantity=2)
    await store_webhook(runtime, "chargeback", "fk-card")  # a clawback names the receipt
    tables = ("gift_send", "ledger_entry", "clawback")

    clawback_keys = ["app_user", "gift_send", "ledger_transaction", "purchase_reversal"]
    after = await _keys_and_rows(runtime, tables)
    assert {table: keys for table, (keys, _) in after.items()} == {
        "gift_send": [], "ledger_entry": [], "clawback": clawback_keys}
    assert all(rows > 0 for _, rows in after.values()), after
    async with runtime.engine.begin() as connection:
        await connection.run_sync(lambda sync: command.downgrade(alembic_config(sync), "0020"))
    assert await _keys_and_rows(runtime, tables) == {
        "gift_send": (["app_user", "app_user", "gift", "gift_combo", "ledger_transaction",
                       "live_session", "rate_card"], after["gift_send"][1]),
        "ledger_entry": (["ledger_account", "ledger_transaction"], after["ledger_entry"][1]),
        "clawback": (clawback_keys, after["clawback"][1])}
    await upgrade(runtime.engine)
    assert await _keys_and_rows(runtime, tables) == after
    for statement in ("UPDATE ledger_entry SET amount = amount + 1",
                      "DELETE FROM ledger_entry"):
        with pytest.raises(Exception, match="ledger rows are immutable"):
            await execute_sql(runtime.settings.database_url, statement)
    async with runtime.sessions() as session:
        assert await audit(session, test_grants=True) == []
