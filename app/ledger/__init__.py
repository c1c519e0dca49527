"""The double-entry ledger: every coin, diamond and cent that moves, moves here.

Rules (each enforced in exactly one place):

* An **account** holds one currency (``COIN``, ``DIAMOND`` or an ISO fiat code in
  minor units). Amounts are Python ``int``; a ``float`` is refused.
* A **transaction** has two or more **entries**; the entries of one transaction
  sum to zero per currency (:func:`post_transaction` refuses anything else).
  Entries are never updated or deleted: a correction is a new transaction that
  links back with ``reverses_id``.
* A *cached* account keeps its balance in its row, updated in the same database
  transaction as its entries. System accounts that every purchase or gift touches
  (issuance, platform revenue) are *derived*: only entries are written, so no
  single row becomes a hot spot.
* A *limited* account must not go negative. The check is the ``WHERE`` clause of
  the conditional ``UPDATE`` that moves the balance, never a read followed by a
  write, so concurrent debits cannot overdraw it.
* Every money mutation runs under an **idempotency key** (:func:`run_idempotent`):
  the same key and input return the first result and move nothing again; the
  same key with other input is refused; a business refusal stays refused.
* :func:`audit` proves it all after the fact: per-currency conservation, cached
  balance = sum of entries, no limited account below zero, every transaction balanced,
  every row an entry names present (entries hold their transaction's and account's ids
  without foreign keys: those rows can be neither deleted nor renumbered).
"""

from app.ledger.accounts import (
    AccountRef,
    Currency,
    lock_account,
    lock_accounts,
    open_account,
    system_account,
    system_code,
    user_account,
    user_accounts,
    user_code,
)
from app.ledger.audit import AuditFinding, audit
from app.ledger.idempotency import Claim, claim_keys, run_idempotent, settle_keys
from app.ledger.posting import (
    InsufficientFunds,
    Leg,
    Posting,
    UnbalancedTransaction,
    post_transaction,
    post_transactions,
)

__all__ = [
    "AccountRef",
    "AuditFinding",
    "Claim",
    "Currency",
    "InsufficientFunds",
    "Leg",
    "Posting",
    "UnbalancedTransaction",
    "audit",
    "claim_keys",
    "lock_account",
    "lock_accounts",
    "open_account",
    "post_transaction",
    "post_transactions",
    "run_idempotent",
    "settle_keys",
    "system_account",
    "system_code",
    "user_account",
    "user_accounts",
    "user_code",
]
