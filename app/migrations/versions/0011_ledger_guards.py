"""The database refuses TRUNCATE of the ledger and changes to what an account is.

Revision ID: 0011
Revises: 0010

Ledger rows were already immutable row by row (0005); TRUNCATE skips row triggers, so it
gets a statement trigger of its own. An account's code, currency, owner and kind (cached,
limited) are what the audit reads the ledger by: they never change; its balance does.
"""
from __future__ import annotations

from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

LEDGER = ("ledger_account", "ledger_entry", "ledger_transaction", "ledger_seal")
FIXED = ("code", "currency", "owner_user_id", "cached", "limited")
MESSAGE = "ledger accounts keep their code, currency, owner and kind; only balances move"


def upgrade() -> None:
    changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in FIXED)
    if op.get_bind().dialect.name == "postgresql":
        for table in LEDGER:  # livegifts_refuse_change() comes from revision 0005
            op.execute(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                       "FOR EACH STATEMENT EXECUTE FUNCTION livegifts_refuse_change()")
        op.execute(f"""CREATE FUNCTION livegifts_refuse_account_change() RETURNS trigger
                       LANGUAGE plpgsql AS $$ BEGIN
                       RAISE EXCEPTION '{MESSAGE}'; END $$""")
        op.execute("CREATE TRIGGER ledger_account_fixed BEFORE UPDATE ON ledger_account "
                   f"FOR EACH ROW WHEN ({changed.replace(' IS NOT ', ' IS DISTINCT FROM ')}) "
                   "EXECUTE FUNCTION livegifts_refuse_account_change()")
        op.execute("CREATE TRIGGER ledger_account_no_delete BEFORE DELETE ON ledger_account "
                   "FOR EACH ROW EXECUTE FUNCTION livegifts_refuse_account_change()")
    else:
        op.execute(f"CREATE TRIGGER ledger_account_fixed BEFORE UPDATE ON ledger_account "
                   f"WHEN {changed} BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END")
        op.execute("CREATE TRIGGER ledger_account_no_delete BEFORE DELETE ON ledger_account "
                   f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER ledger_account_no_delete ON ledger_account")
        op.execute("DROP TRIGGER ledger_account_fixed ON ledger_account")
        op.execute("DROP FUNCTION livegifts_refuse_account_change()")
        for table in LEDGER:
            op.execute(f"DROP TRIGGER {table}_no_truncate ON {table}")
    else:
        op.execute("DROP TRIGGER ledger_account_no_delete")
        op.execute("DROP TRIGGER ledger_account_fixed")
