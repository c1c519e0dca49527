"""Every plugin hook livegifts calls, typed and documented.

Plugins implement these with ``from app import hookimpl``; the core registers its
own defaults (the sandbox providers) through the same hooks. Hooks about one
sponsored gift (``quote_gift``, ``split_revenue``, ``check_send``) are called only
on the plugin that declared the gift, in a worker thread with a time limit; the
core validates every answer and refuses the send (moving nothing) when a plugin
raises, runs out of time or answers nonsense.

Every hook about brands and gifts may take ``config``: the plugin's own settings,
``LIVEGIFTS_PLUGIN_CONFIG[<plugin name>]`` (a read-only mapping, empty if unset). A hook
implementation takes only the arguments it names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from app.payments import PaymentProvider, PayoutProvider
    from app.settings import Settings
    from app.sponsorship import (
        Brand,
        BrandShare,
        MatchBoost,
        MatchContext,
        Quote,
        RateCardTerms,
        RevenueSplit,
        SendContext,
        SentGift,
        SponsoredGift,
        Veto,
    )

PROJECT = "livegifts"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# Declarations: called once at start; every plugin's results are collected. ----------------

@hookspec
def register_brands(config: Mapping[str, Any]) -> list[Brand]:
    """Declare the brands this plugin sponsors gifts for.

    :param config: the plugin's own settings.
    :returns: a list of :class:`app.sponsorship.Brand`. A slug belongs to one distribution:
        a plugin declaring another's is refused whole.
    """


@hookspec
def register_sponsored_gifts(config: Mapping[str, Any]) -> list[SponsoredGift]:
    """Declare sponsored gifts; they join the catalogue marked as sponsored, with their brand.

    :param config: the plugin's own settings.
    :returns: a list of :class:`app.sponsorship.SponsoredGift`, each naming a brand this
        plugin declared. The plugin that declares a gift owns its pricing and rules.
    """


@hookspec
def register_payment_providers(settings: Settings) -> list[PaymentProvider]:
    """Declare payment providers that verify coin-purchase receipts.

    :param settings: the running server's settings (secrets, environment).
    :returns: a list of objects with a unique ``name`` and ``async verify_receipt(receipt)``
        returning :class:`app.payments.VerifiedReceipt` or raising
        :class:`app.payments.ReceiptRejected`. All results are collected; a provider name
        registered twice is an error at start.
    """


@hookspec
def register_payout_providers(settings: Settings) -> list[PayoutProvider]:
    """Declare payout providers that send creators' cash.

    :param settings: the running server's settings.
    :returns: a list of :class:`app.payments.PayoutProvider`: a unique ``name``,
        ``async submit(order) -> provider payout id`` and ``verify_webhook(body,
        signature) -> PayoutOutcome`` (or raise :class:`app.payments.WebhookRejected`).
        ``LIVEGIFTS_PAYOUT_PROVIDER`` picks the one used. All results are collected.
    """


# One sponsored send: called on the owning plugin only, in a worker thread with a time
# limit; the first non-None result wins. ----------------------------------------------------

@hookspec(firstresult=True)
def quote_gift(send: SendContext, config: Mapping[str, Any]) -> Quote | None:
    """Price a send of one of this plugin's gifts for this viewer, session, quantity and time.

    :param send: the attempted send (:class:`app.sponsorship.SendContext`).
    :param config: the plugin's own settings.
    :returns: a :class:`app.sponsorship.Quote`: ``viewer_pays`` (an integer >= 1, for the
        whole quantity) and ``brand_subsidy`` (an integer >= 0, drawn from the brand's
        budget in the gift's own transaction). ``None`` means the list price, unsubsidised.
    """


@hookspec(firstresult=True)
def split_revenue(send: SendContext, quote: Quote, rate_card: RateCardTerms,
                  config: Mapping[str, Any]) -> RevenueSplit | BrandShare | None:
    """Split a quoted send's value among creator, platform and brand.

    :param config: the plugin's own settings.
    :param send: the attempted send.
    :param quote: the validated quote; its ``value`` is what gets split.
    :param rate_card: the published rate card in force.
    :returns: a :class:`app.sponsorship.RevenueSplit` of non-negative integers summing
        exactly to ``quote.value``; or a :class:`app.sponsorship.BrandShare`, the brand's
        rate of the platform's cut, which the core rounds fairly over time; ``None`` means
        the rate card's split with no brand share.
    """


@hookspec(firstresult=True)
def check_send(send: SendContext, config: Mapping[str, Any]) -> Veto | None:
    """Apply campaign rules (windows, caps) before a send of one of this plugin's gifts.

    :param config: the plugin's own settings.
    :param send: the attempted send; ``send.viewer_sent_today`` counts the viewer's sends
        of this gift so far today (UTC).
    :returns: ``None`` to allow, or a :class:`app.sponsorship.Veto` whose reason the viewer
        sees with the code ``SEND_VETOED``.
    """


@hookspec
def gift_sent(gift: SentGift, config: Mapping[str, Any]) -> None:
    """Be told that one of this plugin's sponsored gifts was sent.

    :param config: the plugin's own settings.
    :param gift: the committed send (:class:`app.sponsorship.SentGift`). Called on the
        owning plugin only, after the sender was answered, from the event log written with
        the send: at least once per send (never for a refused or replayed one), in the
        order of the brand's sends, with ``gift.delivery_id`` the same on every call for
        one send. A call that raises or runs out of time is logged, counted and made again
        later (backing off like a webhook); it never undoes the send. The return value is
        ignored.
    """


# A match about to start: asked of every plugin that implements it, behind its bulkhead,
# before the match's transaction. -------------------------------------------------------

@hookspec
def boost_match(match: MatchContext, config: Mapping[str, Any]) -> MatchBoost | None:
    """Offer to sponsor a match between two creators as it starts.

    :param match: the match (:class:`app.sponsorship.MatchContext`).
    :param config: the plugin's own settings.
    :returns: ``None`` for no boost, or a :class:`app.sponsorship.MatchBoost` naming a brand
        this plugin owns: for its first ``seconds`` of the match, each gift of that brand
        counts ``multiplier`` (2 to 10) times its value in the match's score, never in money.
        An answer for another plugin's brand, an invalid answer, an error or a time-out
        gives no boost (logged and counted like any plugin failure); the match starts
        either way.
    """
