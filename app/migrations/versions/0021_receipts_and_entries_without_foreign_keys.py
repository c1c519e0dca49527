"""Gift receipts and ledger entries lose their foreign keys; an account keeps its id.

Every gift wrote one receipt and five entries, and their foreign keys made PostgreSQL look
up and lock seventeen rows a gift, several of them rows every writer shares (the system
accounts, the gift, the rate card): a quarter of a gift's database time. The ids they hold
come from rows the database returned (in the same transaction, or a system account's once a
process, when it was opened); those rows are never deleted
(ledger transactions and accounts refuse it, the others have no way to be), an account's
id no longer changes (the trigger that fixes what an account is now includes it), and the
ledger audit names any receipt or entry whose rows are missing (app.ledger.references).

SQLite copies each table to drop its keys. The receipts are referred to by clawbacks, and
SQLite cannot drop a table others refer to while it checks foreign keys (a migration runs
in one transaction, where that cannot be switched off): the clawbacks' key to their
receipt is dropped first and restored after. The entries' copy loses the triggers that
keep them immutable, so they are made again.

Revision ID: 0021
Revises: 0020
"""
from __future__ import annotations

from alembic import op

revision = '0021'
down_revision = '0020'
branch_labels = None
depends_on = None

# table -> (column, the table and column it referred to)
KEYS = {
    'gift_send': [('session_id', 'live_session', 'id'), ('gift_id', 'gift', 'id'),
                  ('sender_id', 'app_user', 'id'), ('creator_id', 'app_user', 'id'),
                  ('rate_card_version', 'rate_card', 'version'),
                  ('transaction_id', 'ledger_transaction', 'id'),
                  ('combo_id', 'gift_combo', 'id')],
    'ledger_entry': [('transaction_id', 'ledger_transaction', 'id'),
                     ('account_id', 'ledger_account', 'id')],
}
CLAWBACK_KEY = ('clawback', 'gift_send_id', 'gift_send', 'id')
# revision 0005's row triggers on SQLite (PostgreSQL's survive an ALTER TABLE)
IMMUTABLE = "ledger rows are immutable: post a reversing transaction instead"
# revision 0011's account trigger, and the id it now fixes as well
ACCOUNT_MESSAGE = "ledger accounts keep their code, currency, owner and kind; only balances move"
FIXED_BEFORE = ("code", "currency", "owner_user_id", "cached", "limited")
FIXED_NOW = ("id", *FIXED_BEFORE)


def _name(table: str, column: str, referred: str) -> str:
    return f'fk_{table}_{column}_{referred}'


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def _clawback_key(present: bool) -> None:
    table, column, referred, referred_column = CLAWBACK_KEY
    with op.batch_alter_table(table) as batch:
        if present:
            batch.create_foreign_key(_name(table, column, referred), referred, [column],
                                     [referred_column])
        else:
            batch.drop_constraint(_name(table, column, referred), type_='foreignkey')


def _entry_triggers() -> None:
    for action in ("update", "delete"):
        op.execute(f"CREATE TRIGGER ledger_entry_no_{action} BEFORE {action.upper()} ON "
                   f"ledger_entry BEGIN SELECT RAISE(ABORT, '{IMMUTABLE} (ledger_entry)'); END")


def _account_trigger(fixed: tuple[str, ...]) -> None:
    if _sqlite():
        changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in fixed)
        op.execute("DROP TRIGGER ledger_account_fixed")
        op.execute(f"CREATE TRIGGER ledger_account_fixed BEFORE UPDATE ON ledger_account "
                   f"WHEN {changed} BEGIN SELECT RAISE(ABORT, '{ACCOUNT_MESSAGE}'); END")
    else:
        changed = " OR ".join(f"OLD.{c} IS DISTINCT FROM NEW.{c}" for c in fixed)
        op.execute("DROP TRIGGER ledger_account_fixed ON ledger_account")
        op.execute("CREATE TRIGGER ledger_account_fixed BEFORE UPDATE ON ledger_account "
                   f"FOR EACH ROW WHEN ({changed}) "
                   "EXECUTE FUNCTION livegifts_refuse_account_change()")


def _keys(present: bool) -> None:
    sqlite = _sqlite()
    if sqlite:
        _clawback_key(False)
    for table, keys in KEYS.items():
        with op.batch_alter_table(table) as batch:
            for column, referred, referred_column in keys:
                if present:
                    batch.create_foreign_key(_name(table, column, referred), referred,
                                             [column], [referred_column])
                else:
                    batch.drop_constraint(_name(table, column, referred), type_='foreignkey')
    if sqlite:
        _entry_triggers()
        _clawback_key(True)


def upgrade() -> None:
    _keys(False)
    _account_trigger(FIXED_NOW)


def downgrade() -> None:
    _account_trigger(FIXED_BEFORE)
    _keys(True)
