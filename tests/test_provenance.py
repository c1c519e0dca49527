"""The audit ties every ledger transaction to its source record, on SQLite and PostgreSQL:
a transaction nothing stands behind, a record and a transaction that disagree, the test
kit's grants outside a test database, and a receipt or an entry naming a row that does not
exist are each named."""

from __future__ import annotations

from sqlalchemy import select

from app.ledger import Currency, Leg, audit, post_transaction, system_account
from app.models import Entry, GiftSend, Purchase, PurchaseReversal
from app.services.users import coin_account
from app.testing import audit as kit_audit
from tests.gifting_support import new_viewer, send, stage
from tests.money_support import buy, store_webhook
from tests.support import execute_sql
from tests.test_ledger import _tamper


async def test_a_purchase_posted_by_hand_balanced_and_digested_is_named(runtime):
    """The tampering of someone with database write access: coins minted from issuance into
    a wallet as a ``coin_purchase``, balanced, digested and the cached balance raised with
    it (through the ledger's own posting), with no purchase behind it."""
    fan = await new_viewer(runtime, "fan")
    await buy(runtime, fan)  # a real purchase beside it passes
    async with runtime.sessions() as session, session.begin():
        forged = await post_transaction(session, kind="coin_purchase", memo="coins-700", legs=[
            Leg(await system_account(session, "coin_issuance", Currency.COIN), -700),
            Leg(await coin_account(session, fan), 700)])
    async with runtime.sessions() as session:
        findings = [str(f) for f in await audit(session)]
    assert findings == [
        f"source record: transaction {forged} (coin_purchase): no record stands behind it (no "
        "purchase, gift, payout, reversal, clawback or brand transfer)"]


async def test_a_record_and_its_transaction_that_disagree_are_named(runtime):
    """A purchase's coins and a gift receipt's diamonds edited after the fact: each names
    the accounts that moved otherwise than its record says."""
    where = await stage(runtime)
    fan = await new_viewer(runtime, "fan")
    await buy(runtime, fan)
    gift = (await send(runtime, fan, where, "doughnut")).receipt
    diamonds = gift.creator_diamonds
    async with runtime.sessions() as session:
        purchase = await session.scalar(select(Purchase))
    for statement in (f"UPDATE coin_purchase SET coins = 7000 WHERE id = {purchase.id}",
                      f"UPDATE gift_send SET creator_diamonds = 1000 WHERE id = {gift.id}"):
        await execute_sql(runtime.settings.database_url, statement)
    async with runtime.sessions() as session:
        findings = [str(f) for f in await audit(session)]
    assert findings == [
        f"source record: transaction {purchase.transaction_id} (coin_purchase): "
        f"system:coin_issuance:COIN moved -700, the purchase {purchase.id} says -7000",
        f"source record: transaction {purchase.transaction_id} (coin_purchase): "
        f"user:{fan}:wallet + user:{fan}:coin_debt moved 700, the purchase {purchase.id} says "
        "7000",
        f"source record: transaction {gift.transaction_id} (gift): system:diamond_issuance:"
        f"DIAMOND moved {-diamonds}, the gift receipt {gift.id} says -1000",
        f"source record: transaction {gift.transaction_id} (gift): user:{where.creator_id}:"
        f"earnings moved {diamonds}, the gift receipt {gift.id} says 1000"]


async def test_a_record_moved_onto_another_transaction_is_named_twice(runtime):
    """A purchase pointed at a gift's transaction: the purchase's own transaction has no
    record left, and the gift's is claimed by two."""
    where = await stage(runtime)
    fan = await new_viewer(runtime, "fan")
    await buy(runtime, fan)
    gift = (await send(runtime, fan, where, "rose")).receipt
    async with runtime.sessions() as session:
        purchase = await session.scalar(select(Purchase))
    await execute_sql(runtime.settings.database_url,
                      f"UPDATE coin_purchase SET transaction_id = {gift.transaction_id}")
    async with runtime.sessions() as session:
        findings = [str(f) for f in await audit(session)]
    assert findings == [
        f"source record: transaction {purchase.transaction_id} (coin_purchase): no record "
        "stands behind it (no purchase, gift, payout, reversal, clawback or brand transfer)",
        f"source record: transaction {gift.transaction_id} (gift): claimed by several records: "
        f"purchase {purchase.id}, gift receipt {gift.id}"]


async def test_a_reversal_must_reverse_its_purchases_transaction(runtime):
    """A refund's transaction says which transaction it reverses; one edited to reverse
    another is named. The refund itself, as posted, passes."""
    fan = await new_viewer(runtime, "fan")
    await buy(runtime, fan, txn="store-1")
    await buy(runtime, fan, txn="store-2")
    await store_webhook(runtime, "refund", "store-1")
    async with runtime.sessions() as session:
        assert await audit(session) == []
        purchases = (await session.scalars(select(Purchase).order_by(Purchase.id))).all()
        reversal = await session.scalar(select(PurchaseReversal))
    await _tamper(runtime, f"UPDATE ledger_transaction SET reverses_id = "
                           f"{purchases[1].transaction_id} WHERE id = {reversal.transaction_id}")
    async with runtime.sessions() as session:
        findings = [str(f) for f in await audit(session) if f.check == "source record"]
    assert findings == [
        f"source record: transaction {reversal.transaction_id} (purchase_refund): reverses "
        f"transaction {purchases[1].transaction_id}, but its reversal {reversal.id} reverses "
        f"transaction {purchases[0].transaction_id}"]


async def test_the_test_kits_grants_pass_only_the_test_kits_audit(runtime):
    where = await stage(runtime)
    fan = await new_viewer(runtime, "fan", 100)  # granted, as the test kit does
    await send(runtime, fan, where, "rose")
    async with runtime.sessions() as session:
        assert await kit_audit(session) == []
        findings = [str(f) for f in await audit(session)]
        grant = await session.scalar(select(GiftSend.transaction_id)) - 1
    assert findings == [f"source record: transaction {grant} (test_grant): a test kit's grant, "
                        "which only a test database holds"]


async def test_receipts_and_entries_naming_missing_rows_are_named(runtime):
    """Receipts and entries hold their ids without foreign keys: a receipt or an entry
    written by hand that names a gift, a combo, an account or a transaction that does not
    exist is named by the audit, once for each reference that is missing."""
    where = await stage(runtime)
    fan = await new_viewer(runtime, "fan")
    await buy(runtime, fan)
    gift = (await send(runtime, fan, where, "rose")).receipt
    async with runtime.sessions() as session:
        assert await audit(session) == []
    await execute_sql(runtime.settings.database_url,
                      f"UPDATE gift_send SET gift_id = 9999, combo_id = 8888 WHERE id = {gift.id}")
    await execute_sql(runtime.settings.database_url,
                      "INSERT INTO ledger_entry (transaction_id, account_id, currency, amount) "
                      "VALUES (7777, 6666, 'COIN', 1), (7777, 6666, 'COIN', -1)")
    async with runtime.sessions() as session:
        findings = [str(f) for f in await audit(session) if f.check == "reference"]
        entries = list(await session.scalars(select(Entry.id).where(Entry.transaction_id == 7777)
                                             .order_by(Entry.id)))
    assert findings == [
        *(f"reference: ledger entry {entry}: its {column} is {value}, and no {row} has it"
          for entry in entries for column, value, row in (
              ("transaction_id", 7777, "ledger transaction"),
              ("account_id", 6666, "ledger account"))),
        f"reference: gift receipt {gift.id}: its gift_id is 9999, and no gift has it",
        f"reference: gift receipt {gift.id}: its combo_id is 8888, and no gift combo has it"]
