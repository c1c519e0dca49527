"""The ledger's rules, on SQLite and PostgreSQL: balanced posts, overdraft, idempotency, audit."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from app.errors import BusinessRefusal, DomainError, ErrorCode
from app.ledger import (
    Currency,
    InsufficientFunds,
    Leg,
    UnbalancedTransaction,
    post_transaction,
    run_idempotent,
    system_account,
    user_account,
)
from app.models import Account, Entry, IdempotencyRecord, LedgerTransaction, User
from app.testing import audit
from tests.support import execute_sql, snapshot


async def make_user(runtime, name: str) -> int:
    async with runtime.sessions() as session, session.begin():
        user = User(name=name)
        session.add(user)
        await session.flush()
        return user.id


async def fund(runtime, user_id: int, coins: int):
    async with runtime.sessions() as session, session.begin():
        wallet = await user_account(session, user_id, "wallet", Currency.COIN)
        issuance = await system_account(session, "coin_issuance", Currency.COIN)
        await post_transaction(session, kind="test_fund",
                               legs=[Leg(issuance, -coins), Leg(wallet, coins)])
    return wallet


async def balance(runtime, code: str) -> int:
    async with runtime.sessions() as session:
        return await session.scalar(select(Account.balance).where(Account.code == code))


async def count(runtime, model) -> int:
    async with runtime.sessions() as session:
        return await session.scalar(select(func.count()).select_from(model))


async def test_balanced_post_moves_cached_balances_and_writes_entries(runtime):
    alice, bob = await make_user(runtime, "alice"), await make_user(runtime, "bob")
    await fund(runtime, alice, 100)
    async with runtime.sessions() as session, session.begin():
        a = await user_account(session, alice, "wallet", Currency.COIN)
        b = await user_account(session, bob, "wallet", Currency.COIN)
        transaction_id = await post_transaction(session, kind="test_transfer",
                                                legs=[Leg(a, -30), Leg(b, 30)])
    assert await balance(runtime, f"user:{alice}:wallet") == 70
    assert await balance(runtime, f"user:{bob}:wallet") == 30
    async with runtime.sessions() as session:
        amounts = sorted((await session.scalars(
            select(Entry.amount).where(Entry.transaction_id == transaction_id))).all())
        assert amounts == [-30, 30]
        # The issuance account is derived: its row is never written, its entries say -100.
        issuance = await session.scalar(select(Account).where(Account.code.like("system:%")))
        assert issuance.balance == 0 and not issuance.cached
        assert await audit(session) == []


@pytest.mark.parametrize("amounts, reason", [
    ([-10], "at least two legs"),
    ([-10, 9], "do not sum to zero"),
    ([-10, 10.0], "not an integer"),
    ([True, -1], "not an integer"),
    ([0, 0], "zero or out of range"),
    ([-(10**16), 10**16], "zero or out of range"),
])
async def test_unbalanced_or_malformed_transactions_are_rejected(runtime, amounts, reason):
    alice, bob = await make_user(runtime, "alice"), await make_user(runtime, "bob")
    await fund(runtime, alice, 100)
    before = await snapshot(runtime.settings.database_url)
    with pytest.raises(UnbalancedTransaction, match=reason):
        async with runtime.sessions() as session, session.begin():
            accounts = [await user_account(session, alice, "wallet", Currency.COIN),
                        await user_account(session, bob, "wallet", Currency.COIN)]
            legs = [Leg(acc, amt) for acc, amt in zip(accounts, amounts, strict=False)]
            await post_transaction(session, kind="bad", legs=legs)
    assert await snapshot(runtime.settings.database_url) == before


async def test_mixed_currencies_must_balance_each_currency(runtime):
    alice = await make_user(runtime, "alice")
    await fund(runtime, alice, 100)
    async with runtime.sessions() as session, session.begin():
        coins = await user_account(session, alice, "wallet", Currency.COIN)
        diamonds = await user_account(session, alice, "earnings", Currency.DIAMOND)
        with pytest.raises(UnbalancedTransaction, match="COIN"):
            await post_transaction(session, kind="bad", legs=[Leg(coins, -5), Leg(diamonds, 5)])


async def test_overdraft_is_rejected_atomically(runtime):
    alice, bob, carol = [await make_user(runtime, n) for n in ("alice", "bob", "carol")]
    await fund(runtime, alice, 100)
    await fund(runtime, bob, 10)
    before = await snapshot(runtime.settings.database_url)
    with pytest.raises(InsufficientFunds) as refused:
        async with runtime.sessions() as session, session.begin():
            a = await user_account(session, alice, "wallet", Currency.COIN)
            b = await user_account(session, bob, "wallet", Currency.COIN)
            c = await user_account(session, carol, "wallet", Currency.COIN)
            # Alice's debit is applied first (lower id); Bob's then fails: both roll back.
            await post_transaction(session, kind="test_split",
                                   legs=[Leg(a, -50), Leg(b, -11), Leg(c, 61)])
    assert refused.value.code is ErrorCode.INSUFFICIENT_COINS
    assert refused.value.message == "Not enough coins: this needs 11 and the balance is 10."
    assert await snapshot(runtime.settings.database_url) == before


async def test_database_refuses_a_negative_limited_balance_even_when_code_is_bypassed(runtime):
    alice = await make_user(runtime, "alice")
    await fund(runtime, alice, 5)
    with pytest.raises(Exception, match="(?i)check"):
        await execute_sql(runtime.settings.database_url, "UPDATE ledger_account SET balance = -1 "
                                                         f"WHERE code = 'user:{alice}:wallet'")


def debit(runtime, user_id: int, amount: int):
    async def action(session):
        wallet = await user_account(session, user_id, "wallet", Currency.COIN)
        sink = await system_account(session, "platform_revenue", Currency.COIN)
        transaction_id = await post_transaction(session, kind="test_debit",
                                                legs=[Leg(wallet, -amount), Leg(sink, amount)])
        return {"transaction_id": transaction_id}
    return action


async def test_replay_returns_the_original_result_and_moves_nothing(runtime):
    alice = await make_user(runtime, "alice")
    await fund(runtime, alice, 100)
    kwargs = dict(scope=f"user:{alice}", key="k-1", operation="debit", request={"amount": 30})
    first = await run_idempotent(runtime.sessions, **kwargs, action=debit(runtime, alice, 30))
    before = await snapshot(runtime.settings.database_url)
    second = await run_idempotent(runtime.sessions, **kwargs, action=debit(runtime, alice, 30))
    assert first == {"transaction_id": second["transaction_id"], "replayed": False}
    assert second["replayed"] is True
    assert await snapshot(runtime.settings.database_url) == before
    assert await balance(runtime, f"user:{alice}:wallet") == 70


async def test_same_key_with_different_input_is_refused(runtime):
    alice = await make_user(runtime, "alice")
    await fund(runtime, alice, 100)
    await run_idempotent(runtime.sessions, scope=f"user:{alice}", key="k-1", operation="debit",
                         request={"amount": 30}, action=debit(runtime, alice, 30))
    before = await snapshot(runtime.settings.database_url)
    with pytest.raises(DomainError) as refused:
        await run_idempotent(runtime.sessions, scope=f"user:{alice}", key="k-1",
                             operation="debit", request={"amount": 31},
                             action=debit(runtime, alice, 31))
    assert refused.value.code is ErrorCode.IDEMPOTENCY_KEY_REUSED
    assert "different request" in refused.value.message
    assert await snapshot(runtime.settings.database_url) == before


async def test_keys_are_scoped_to_their_caller(runtime):
    alice, bob = await make_user(runtime, "alice"), await make_user(runtime, "bob")
    await fund(runtime, alice, 100)
    await fund(runtime, bob, 100)
    for user in (alice, bob):
        result = await run_idempotent(runtime.sessions, scope=f"user:{user}", key="same",
                                      operation="debit", request={"amount": 10},
                                      action=debit(runtime, user, 10))
        assert result["replayed"] is False
    assert await balance(runtime, f"user:{alice}:wallet") == 90
    assert await balance(runtime, f"user:{bob}:wallet") == 90


async def test_a_failed_attempt_stays_failed(runtime):
    alice = await make_user(runtime, "alice")
    await fund(runtime, alice, 10)
    kwargs = dict(scope=f"user:{alice}", key="k-1", operation="debit", request={"amount": 30})
    with pytest.raises(BusinessRefusal) as first:
        await run_idempotent(runtime.sessions, **kwargs, action=debit(runtime, alice, 30))
    await fund(runtime, alice, 100)  # now it could succeed, but the key already failed
    with pytest.raises(BusinessRefusal) as again:
        await run_idempotent(runtime.sessions, **kwargs, action=debit(runtime, alice, 30))
    assert again.value.as_dict() == first.value.as_dict()
    assert again.value.code is ErrorCode.INSUFFICIENT_COINS
    assert await balance(runtime, f"user:{alice}:wallet") == 110
    fresh = await run_idempotent(runtime.sessions, **{**kwargs, "key": "k-2"},
                                 action=debit(runtime, alice, 30))
    assert fresh["replayed"] is False
    assert await balance(runtime, f"user:{alice}:wallet") == 80


async def test_input_errors_leave_no_idempotency_record(runtime):
    async def refuse(session):
        raise DomainError(ErrorCode.NOT_FOUND, "No such thing.", "thingId")

    with pytest.raises(DomainError):
        await run_idempotent(runtime.sessions, scope="user:1", key="k", operation="x",
                             request={}, action=refuse)
    assert await count(runtime, IdempotencyRecord) == 0


@pytest.mark.parametrize("key", ["", "   ", "x" * 256, "tab\tkey"])
async def test_malformed_idempotency_keys_are_refused(runtime, key):
    with pytest.raises(DomainError) as refused:
        await run_idempotent(runtime.sessions, scope="user:1", key=key, operation="x",
                             request={}, action=None)
    assert refused.value.code is ErrorCode.INVALID_IDEMPOTENCY_KEY
    assert await count(runtime, IdempotencyRecord) == 0


async def test_audit_names_the_account_whose_cached_balance_was_tampered(runtime):
    alice = await make_user(runtime, "alice")
    await fund(runtime, alice, 100)
    await execute_sql(runtime.settings.database_url,
                      f"UPDATE ledger_account SET balance = 150 WHERE code = 'user:{alice}:wallet'")
    async with runtime.sessions() as session:
        findings = [str(f) for f in await audit(session)]
    assert findings == [f"cached balance: user:{alice}:wallet: balance 150 but entries sum to 100"]


async def test_audit_reports_a_currency_that_does_not_sum_to_zero(runtime):
    alice = await make_user(runtime, "alice")
    wallet = await fund(runtime, alice, 100)
    async with runtime.sessions() as session, session.begin():
        transaction = LedgerTransaction(kind="forged", digest="forged")
        session.add(transaction)
        await session.flush()
        session.add(Entry(transaction_id=transaction.id, account_id=wallet.id, currency="COIN",
                          amount=5))
    async with runtime.sessions() as session:
        findings = {f.check: str(f) for f in await audit(session)}
    assert findings["conservation"] == "conservation: COIN: entries sum to 5, expected 0"
    assert "transaction" in findings["balanced transaction"]
    assert findings["cached balance"].startswith(f"cached balance: user:{alice}:wallet")


# The tamper-evident journal ----------------------------------------------------------------

async def _tamper(runtime, *statements: str) -> None:
    """Edit ledger rows as an intruder with DDL rights would: around the triggers."""
    postgres = runtime.settings.database_url.startswith("postgresql")
    tables = ("ledger_entry", "ledger_transaction")
    disable = [f"ALTER TABLE {t} DISABLE TRIGGER {t}_immutable" for t in tables] if postgres \
        else [f"DROP TRIGGER {t}_no_{a}" for t in tables for a in ("update", "delete")]
    enable = [f"ALTER TABLE {t} ENABLE TRIGGER {t}_immutable" for t in tables] if postgres \
        else []
    for statement in [*disable, *statements, *enable]:
        await execute_sql(runtime.settings.database_url, statement)


@pytest.mark.parametrize("statement", [
    "UPDATE ledger_entry SET amount = amount + 1",
    "DELETE FROM ledger_entry",
    "UPDATE ledger_transaction SET memo = 'edited'",
    "DELETE FROM ledger_transaction",
])
async def test_the_database_refuses_to_change_ledger_rows(runtime, statement):
    alice = await make_user(runtime, "alice")
    await fund(runtime, alice, 100)
    before = await snapshot(runtime.settings.database_url)
    with pytest.raises(Exception, match="ledger rows are immutable"):
        await execute_sql(runtime.settings.database_url, statement)
    assert await snapshot(runtime.settings.database_url) == before


async def seal_now(runtime):
    from app.ledger import journal

    async with runtime.sessions() as session, session.begin():
        return await journal.seal(session, now=datetime.now(UTC) + journal.SEAL_DELAY)


async def test_an_edited_entry_breaks_its_digest_and_the_chain(runtime):
    alice = await make_user(runtime, "alice")
    for coins in (100, 200, 300):
        await fund(runtime, alice, coins)
    first = await seal_now(runtime)
    assert first.through_transaction_id == 3
    await fund(runtime, alice, 400)
    assert (await seal_now(runtime)).through_transaction_id == 4
    async with runtime.sessions() as session:
        assert await audit(session) == []
    await _tamper(runtime, "UPDATE ledger_entry SET amount = amount * 2 WHERE transaction_id = 2")
    async with runtime.sessions() as session:
        findings = {f.check: str(f) for f in await audit(session)}
    assert findings["journal digest"] == ("journal digest: transaction 2: its rows no longer "
                                          "match the digest taken when it was posted")
    assert findings["cached balance"].startswith(f"cached balance: user:{alice}:wallet")


async def test_a_deleted_transaction_breaks_the_chain(runtime):
    alice = await make_user(runtime, "alice")
    for coins in (100, 200, 300):
        await fund(runtime, alice, coins)
    await seal_now(runtime)
    await _tamper(runtime, "DELETE FROM ledger_entry WHERE transaction_id = 2",
                  "DELETE FROM ledger_transaction WHERE id = 2")
    async with runtime.sessions() as session:
        findings = [str(f) for f in await audit(session)]
    assert ("journal chain: seal 1: transactions 1..3 were edited, inserted or deleted after "
            "they were sealed") in findings


@pytest.mark.parametrize("statement", [
    "UPDATE ledger_account SET cached = false, balance = 0 WHERE code LIKE 'user%wallet'",
    "UPDATE ledger_account SET code = 'system:elsewhere:COIN' WHERE code LIKE 'user%wallet'",
    "UPDATE ledger_account SET limited = false",
    "DELETE FROM ledger_account WHERE code LIKE 'user%wallet'",
    "UPDATE ledger_account SET id = id + 1000 WHERE code LIKE 'user%wallet'",
])
async def test_the_database_refuses_to_change_what_an_account_is(runtime, statement):
    alice = await make_user(runtime, "alice")
    await fund(runtime, alice, 100)
    before = await snapshot(runtime.settings.database_url)
    with pytest.raises(Exception, match="ledger accounts keep their code, currency, owner and "
                                        "kind"):
        await execute_sql(runtime.settings.database_url, statement)
    assert await snapshot(runtime.settings.database_url) == before


@pytest.mark.parametrize("table", ["ledger_seal", "ledger_entry", "ledger_transaction",
                                   "ledger_account"])
async def test_postgresql_refuses_to_truncate_the_ledger(pg_runtime, table):
    alice = await make_user(pg_runtime, "alice")
    await fund(pg_runtime, alice, 100)
    await seal_now(pg_runtime)
    before = await snapshot(pg_runtime.settings.database_url)
    with pytest.raises(Exception, match="ledger rows are immutable"):
        await execute_sql(pg_runtime.settings.database_url, f"TRUNCATE {table} CASCADE")
    assert await snapshot(pg_runtime.settings.database_url) == before
