"""The plugin system: every hook, discovery and its failures, and failing closed at call time."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import inspect
import logging
import os
import re
import subprocess
import sys
import typing
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app import Brand, MatchContext, SponsoredGift, hookimpl, hookspecs
from app.errors import DomainError, ErrorCode
from app.models.base import utcnow
from app.plugins import PluginHost, PluginStartupError
from app.runtime import Runtime
from app.services import gifting
from app.services.brands import fund_budget
from app.services.coins import purchase_coins, seed_default_packages
from app.testing import go_live, new_viewer
from tests.gifting_support import send
from tests.sample_plugins.acme import Acme
from tests.support import settings_for, snapshot

ROOT = Path(__file__).resolve().parent.parent
HOOKS = sorted(name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
               if hasattr(fn, "livegifts_spec"))


@asynccontextmanager
async def core_with(database_url: str, *plugins, clock=None, **settings):
    config = settings_for(database_url).model_copy(update=settings)
    host = PluginHost(config, extra_plugins=plugins, **({"clock": clock} if clock else {}))
    runtime = Runtime.build(config, host)
    await runtime.sync_catalogue()
    try:
        yield runtime
    finally:
        await runtime.close()


async def funded_stage(runtime, budget: int = 10_000):
    admin = await new_viewer(runtime, "admin")
    for slug in runtime.plugins.brands:
        await fund_budget(runtime.sessions, admin_id=admin, slug=slug, coins=budget,
                          idempotency_key=f"fund-{slug}")
    return await go_live(runtime, "creator"), await new_viewer(runtime, "fan", 10_000)


async def _send(runtime, stage, fan, sku, quantity, key):
    """Send through the runtime's plugin host, as the API does."""
    return (await send(runtime, fan, stage, sku, quantity=quantity, key=key)).receipt


# One test per hook (test_every_hook_has_a_test keeps it so). ------------------------------

async def test_hook_register_brands(database_url):
    async with core_with(database_url, ("acme", Acme())) as runtime:
        assert runtime.plugins.records["acme"].brands == ["acme"]
        from sqlalchemy import select

        from app.models import Brand
        async with runtime.sessions() as session:
            brand = await session.scalar(select(Brand))
        assert (brand.slug, brand.name, brand.plugin) == ("acme", "Acme", "acme")


async def test_hook_register_sponsored_gifts(database_url):
    async with core_with(database_url, ("acme", Acme())) as runtime:
        stage = await go_live(runtime, "creator")
        from app.models import Gift
        async with runtime.sessions() as session:
            rocket = await session.get(Gift, stage.gifts["acme-rocket"])
        assert (rocket.name, rocket.coin_price, rocket.plugin) == ("Acme Rocket", 50, "acme")
        assert rocket.brand_id is not None
        assert runtime.plugins.records["acme"].hooks == [
            "boost_match", "check_send", "gift_sent", "quote_gift", "register_brands",
            "register_sponsored_gifts", "split_revenue"]


async def test_hook_register_payment_providers(database_url):
    async with core_with(database_url, plugin_modules="tests.sample_plugins.teststore") as rt:
        assert sorted(rt.payment_providers) == ["sandbox", "teststore"]
        async with rt.sessions() as session, session.begin():
            await seed_default_packages(session)
        buyer = await new_viewer(rt, "buyer")
        from sqlalchemy import select

        from app.models import CoinPackage
        async with rt.sessions() as session:
            package = await session.scalar(select(CoinPackage).where(CoinPackage.sku == "coins-70"))
        bought = await purchase_coins(rt.sessions, rt.payment_providers, rt.settings,
                                      user_id=buyer,
                                      package_id=package.id, provider="teststore",
                                      receipt="paid:coins-70:99:t-1", idempotency_key="k")
        assert (bought.purchase.coins, bought.purchase.provider) == (70, "teststore")


async def test_hook_register_payout_providers(database_url):
    from app.services import payouts
    from tests.money_support import earn_diamonds

    async with core_with(database_url, plugin_modules="tests.sample_plugins.instapay",
                         payout_provider="instapay") as runtime:
        assert sorted(runtime.payout_providers) == ["instapay", "sandbox"]
        creator = await new_viewer(runtime, "creator")
        await earn_diamonds(runtime, creator, 2_000)
        payout = (await payouts.request_payout(
            runtime.sessions, runtime.payout_providers, runtime.settings, creator_id=creator,
            diamonds=2_000, idempotency_key="p")).payout
        assert (payout.provider, payout.provider_payout_id) == ("instapay", f"ip-{payout.id}")
        settled, _ = await payouts.settle_from_webhook(
            runtime.sessions, runtime.payout_providers, "instapay",
            b'{"id": "ip-%d", "ok": true}' % payout.id, "trusted")
        assert settled.status == "paid"


async def test_hook_quote_gift(database_url):
    async with core_with(database_url, ("acme", Acme(subsidy_percent=30))) as runtime:
        stage, fan = await funded_stage(runtime, budget=1_000)
        receipt = await _send(runtime, stage, fan, "acme-rocket", 4, None)  # value 200
        assert (receipt.coins_paid, receipt.brand_subsidy) == (140, 60)
        from app.services.brands import budget_balance
        async with runtime.sessions() as session:
            assert await budget_balance(session, "acme") == 940


async def test_hook_split_revenue(database_url):
    async with core_with(database_url, ("acme", Acme(subsidy_percent=0))) as runtime:
        stage, fan = await funded_stage(runtime)
        receipt = await _send(runtime, stage, fan, "acme-rocket", 3, None)  # value 150
        assert (receipt.creator_coins, receipt.platform_coins, receipt.brand_coins) == \
            (75, 60, 15)
        from app.testing import audit
        async with runtime.sessions() as session:
            assert await audit(session) == []
            from sqlalchemy import select

            from app.models import Account
            revenue = await session.scalar(select(Account.balance).where(
                Account.code == "brand:acme:revenue"))
        assert revenue == 15


async def test_hook_check_send(database_url):
    veto = "Rockets are grounded during the storm."
    async with core_with(database_url, ("acme", Acme(veto=veto))) as runtime:
        stage, fan = await funded_stage(runtime)
        before = await snapshot(database_url)
        with pytest.raises(DomainError) as refused:
            await _send(runtime, stage, fan, "acme-rocket", 1, None)
        assert (refused.value.code, refused.value.message) == (ErrorCode.SEND_VETOED, veto)
        assert await snapshot(database_url) == before


async def test_hook_gift_sent(database_url):
    acme = Acme()
    async with core_with(database_url, ("acme", acme)) as runtime:
        stage, fan = await funded_stage(runtime)
        receipt = await _send(runtime, stage, fan, "acme-rocket", 2, "once")
        await _send(runtime, stage, fan, "acme-rocket", 2, "once")  # a replay tells nobody
        await _send(runtime, stage, fan, "rose", 1, None)  # not a sponsored gift
        assert acme.sent == []  # told after the sender is answered, from the event log
        assert await runtime.deliver_events() == 1
        assert [(g.receipt_id, g.quantity, g.brand) for g in acme.sent] == \
            [(receipt.id, 2, "acme")]
        assert acme.sent[0].delivery_id.isdigit()


async def test_hook_boost_match(database_url):
    """Asked once as a match starts, with the match; its brand's gifts then score the
    multiple while the boost is on. (tests/test_matches.py has the failures and money.)"""
    from app.services import matches

    acme = Acme(boost=(4, 60))
    async with core_with(database_url, ("acme", acme)) as runtime:
        red, fan = await funded_stage(runtime)
        blue = await go_live(runtime, "blue")
        at = datetime.now(UTC)
        invited = await matches.invite(runtime.sessions, runtime.relay,
                                       creator_id=red.creator_id, session_id=red.session_id,
                                       opponent_session_id=blue.session_id, duration_seconds=90,
                                       now=at)
        match = await matches.accept(runtime.sessions, runtime.relay, runtime.plugins,
                                     creator_id=blue.creator_id, match_id=invited.id,
                                     clock=lambda: at)
        assert acme.asked == [MatchContext(
            match_id=match.id, inviter_id=red.creator_id, invitee_id=blue.creator_id,
            inviter_session_id=red.session_id, invitee_session_id=blue.session_id,
            duration_seconds=90, at=at)]
        assert [(b["brand"], b["multiplier"]) for b in matches.boosts_of(match)] == [("acme", 4)]
        await _send(runtime, red, fan, "acme-rocket", 1, None)
        async with runtime.sessions() as session:
            from app.models import LiveMatch

            assert (await session.get(LiveMatch, match.id)).inviter_score == 4 * 50


async def test_a_failing_gift_sent_listener_does_not_undo_the_gift(database_url, caplog):
    async with core_with(database_url, ("acme", Acme(mode="listener-raises"))) as runtime:
        stage, fan = await funded_stage(runtime)
        with caplog.at_level(logging.ERROR, logger="livegifts.plugins"):
            receipt = await _send(runtime, stage, fan, "acme-rocket", 1, None)
            await runtime.deliver_events()
        assert receipt.id is not None
        assert "plugin acme failed: gift_sent raised RuntimeError" in caplog.text
        assert runtime.plugins.records["acme"].failures == 1


def test_every_hook_has_a_test():
    tested = {name.removeprefix("test_hook_") for name in globals()
              if name.startswith("test_hook_")}
    assert sorted(set(HOOKS) - tested) == [], "hooks without a test_hook_<name> test"


def test_every_hook_is_documented_with_its_exact_signature():
    docs = (ROOT / "docs" / "plugins.md").read_text()
    for name in HOOKS:
        signature = inspect.signature(getattr(hookspecs, name))
        params = ", ".join(f"{p.name}: {p.annotation}" for p in signature.parameters.values())
        heading = f"### `{name}({params}) -> {signature.return_annotation}`"
        assert heading in docs, f"docs/plugins.md lacks {heading}"
        assert getattr(hookspecs, name).__doc__, f"{name} has no docstring"


def call_heading(function, call: str, method: bool) -> str:
    """How docs/plugins.md heads a test kit callable: its call, parameters and return type."""
    signature, params = inspect.signature(function), []
    for p in list(signature.parameters.values())[method:]:  # a method's self is not written
        text = f"{p.name}: {p.annotation}"
        text = {p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "") + text
        params.append(text if p.default is p.empty else f"{text} = {p.default!r}")
    awaited = "await " if inspect.iscoroutinefunction(function) else ""
    return f"`{awaited}{call}({', '.join(params)}) -> {signature.return_annotation}`"


def kit_reference():
    """(heading, function or class) of every public name of the test kit: the fixture, the
    module's helpers and classes, and the harness's and clock's attributes and methods."""
    import app.testing as kit
    from app.testing import Clock, Harness

    for name in kit.__all__:
        found = getattr(kit, name)
        if inspect.isclass(found):
            yield f"`{name}`", found
        elif inspect.iscoroutinefunction(found):
            yield call_heading(found, f"app.testing.{name}", method=False), found
        else:  # the fixture: documented with what it gives a test
            function = found.__wrapped__
            [given] = typing.get_args(typing.get_type_hints(function)["return"])
            yield f"`{name}` (fixture) -> {given.__name__}", function
    for name, annotation in Harness.__annotations__.items():
        yield f"`livegifts.{name}` (attribute) -> {annotation}", None
    for owner, prefix in ((Harness, "livegifts"), (Clock, "livegifts.clock")):
        for name, member in vars(owner).items():
            if name == "__call__":
                yield call_heading(member, prefix, method=True), member
            elif isinstance(member, property):
                annotation = inspect.signature(member.fget).return_annotation
                yield f"`{prefix}.{name}` (property) -> {annotation}", member.fget
            elif not name.startswith("_") and callable(member):
                yield call_heading(member, f"{prefix}.{name}", method=True), member


def kit_returns() -> dict[type, list[str]]:
    """Every data type a test kit callable returns, nested ones included, with its fields."""
    import pydantic

    pending = [typing.get_type_hints(f)["return"] for _, f in kit_reference()
               if inspect.isfunction(f)]
    found: dict[type, list[str]] = {}
    while pending:
        hint = pending.pop()
        pending.extend(typing.get_args(hint))  # list[AuditFinding], dict[str, Gift]
        if not isinstance(hint, type) or hint in found:
            continue
        if dataclasses.is_dataclass(hint):
            hints = typing.get_type_hints(hint)
            fields = {f.name: hints[f.name] for f in dataclasses.fields(hint)}
        elif issubclass(hint, pydantic.BaseModel):  # the SQLModel rows
            fields = {name: f.annotation for name, f in hint.model_fields.items()}
        else:
            continue
        found[hint] = list(fields)
        pending.extend(fields.values())
    return found


def test_every_test_kit_name_is_documented_with_its_signature():
    docs = (ROOT / "docs" / "plugins.md").read_text()
    for heading, documented in kit_reference():
        assert f"\n#### {heading}\n" in docs, f"docs/plugins.md lacks #### {heading}"
        assert documented is None or documented.__doc__, f"{heading} has no docstring"


def test_every_field_of_what_the_test_kit_returns_is_documented():
    docs = (ROOT / "docs" / "plugins.md").read_text()
    returned = kit_returns()
    assert {kind.__name__ for kind in returned} >= {
        "Stage", "GiftSend", "Gift", "Wallet", "CampaignReport", "ReportLine", "AuditFinding"}
    for kind, fields in returned.items():
        section = re.search(rf"^#### `{kind.__name__}`\n(.*?)(?=^#|\Z)", docs, re.M | re.S)
        assert section, f"docs/plugins.md lacks #### `{kind.__name__}`, which the test kit returns"
        missing = [name for name in fields if f"`{name}`" not in section.group(1)]
        assert missing == [], f"docs/plugins.md's `{kind.__name__}` lacks the fields {missing}"


def test_the_core_names_no_partner_package():
    partners = ROOT / "plugins"
    if not partners.is_dir():
        pytest.skip("no plugins/ directory in this checkout")
    names = {p.name for p in partners.glob("*/livegifts_*")} | \
        {p.name for p in partners.iterdir() if p.is_dir()}
    for path in (ROOT / "app").rglob("*.py"):
        text = path.read_text()
        for name in names:
            assert name not in text, f"{path} mentions {name!r}: the core stays brand-free"


# Failing closed at call time. -------------------------------------------------------------

BAD_ANSWERS = {
    "raise": "quote_gift raised ZeroDivisionError: division by zero",
    "hang": "quote_gift did not answer within 0.3 s",
    "float-price": "invalid answer: viewer_pays must be an integer >= 1, got 50.0",
    "zero-price": "invalid answer: viewer_pays must be an integer >= 1, got 0",
    "negative-subsidy": "invalid answer: brand_subsidy must be an integer >= 0, got -5",
    "not-a-quote": "invalid answer: quote_gift must return a Quote",
    "unbalanced-split": "invalid answer: the shares sum to 51, not the value 50",
    "negative-share": "invalid answer: platform_coins must be an integer >= 0, got -1",
    "float-share": "invalid answer: creator_coins must be an integer >= 0, got 25.0",
    "veto-nonsense": "invalid answer: check_send must return None or a Veto",
    "share-too-large": "invalid answer: platform_bps must be an integer from 0 to 10000, "
                       "got 10001",
}


@pytest.mark.parametrize("mode", list(BAD_ANSWERS))
async def test_a_failing_plugin_makes_its_gift_unavailable_and_moves_nothing(
        database_url, caplog, mode):
    async with core_with(database_url, ("acme", Acme(mode=mode)),
                         plugin_timeout_seconds=0.3) as runtime:
        stage, fan = await funded_stage(runtime)
        before = await snapshot(database_url)
        with caplog.at_level(logging.ERROR, logger="livegifts.plugins"), \
                pytest.raises(DomainError) as refused:
            await _send(runtime, stage, fan, "acme-rocket", 1, None)
        assert refused.value.code is ErrorCode.GIFT_UNAVAILABLE
        assert refused.value.message.startswith("The gift 'Acme Rocket' is unavailable: its "
                                                "sponsor's plugin")
        assert await snapshot(database_url) == before
        assert f"plugin acme failed: {BAD_ANSWERS[mode]}" in caplog.text
        assert runtime.plugins.records["acme"].failures == 1
        # The server keeps serving: an ordinary gift goes through.
        assert (await _send(runtime, stage, fan, "rose", 1, None)).coins_paid == 1


async def test_an_uninstalled_plugins_gift_is_unavailable(database_url):
    async with core_with(database_url, ("acme", Acme())) as runtime:
        stage, fan = await funded_stage(runtime)
    async with core_with(database_url) as runtime:  # restarted without the plugin
        with pytest.raises(DomainError) as refused:
            await _send(runtime, stage, fan, "acme-rocket", 1, None)
        assert refused.value.message == ("The gift 'Acme Rocket' is unavailable: its sponsor's "
                                         "plugin is not installed.")


# Discovery. -------------------------------------------------------------------------------

def entry_point(name: str, target: str) -> importlib.metadata.EntryPoint:
    return importlib.metadata.EntryPoint(name=name, value=target, group="livegifts")


DISCOVERY = [
    entry_point("acme", "tests.sample_plugins.acme:plugin"),
    entry_point("broken", "tests.sample_plugins.broken_import"),
    entry_point("typo", "tests.sample_plugins.misspelled"),
    entry_point("stray", "tests.sample_plugins.undeclared_brand"),
    entry_point("globex", "tests.sample_plugins.acme:globex"),
]


class _Unpictured:
    def __init__(self, **picture) -> None:
        self.picture = picture

    @hookimpl
    def register_brands(self):
        return [Brand("blank", "Blank")]

    @hookimpl
    def register_sponsored_gifts(self):
        return [SponsoredGift(sku="blank-gift", name="Blank", brand="blank", coin_price=5,
                              **self.picture)]


@pytest.mark.parametrize("picture, reason", [
    ({}, "gift 'blank-gift' needs a picture: image_url or image_file, one of them"),
    ({"image_url": "https://x.example/a.png", "image_file": Path(__file__)},
     "gift 'blank-gift' needs a picture: image_url or image_file, one of them"),
    ({"image_file": Path(__file__)},
     f"image_file {Path(__file__)} is not an .svg, .png or .webp picture"),
    ({"image_file": Path(__file__).parent / "nowhere.svg"},
     f"gift 'blank-gift': image_file {Path(__file__).parent / 'nowhere.svg'} is not a file "
     "in the package"),
])
def test_a_sponsored_gift_without_one_good_picture_fails_its_plugin(picture, reason):
    host = PluginHost(settings_for("sqlite+aiosqlite://"),
                      extra_plugins=[("blank", _Unpictured(**picture))])
    try:
        assert (host.records["blank"].status, host.records["blank"].error) == (
            "failed", f"declaration failed: ValueError: {reason}")
        assert "blank-gift" not in host.gifts
    finally:
        host.close()


def test_failures_at_import_registration_and_declaration_are_reported_and_skipped(caplog):
    with caplog.at_level(logging.ERROR, logger="livegifts.plugins"):
        host = PluginHost(settings_for("sqlite+aiosqlite://").model_copy(
            update={"plugins": "all"}), entry_points=DISCOVERY)
    status = {name: (r.status, r.error) for name, r in host.records.items()}
    assert status["acme"] == ("active", None)
    assert status["broken"] == ("failed", "import failed: ImportError: No module named 'acme_sdk'")
    assert status["typo"][0] == "failed"
    assert re.match(r"registration failed: PluginValidationError: unknown hook 'quote_gfit'",
                    status["typo"][1])
    assert status["stray"] == ("failed", "declaration failed: ValueError: gift 'stray' names "
                                         "brand 'nobody', which this plugin does not declare")
    assert sorted(host.gifts) == ["acme-rocket", "globex-globe"]
    assert not host.manager.is_registered(host.manager.get_plugin("typo"))
    assert "plugin broken: import failed" in caplog.text
    host.close()


def test_allow_and_block_lists():
    host = PluginHost(settings_for("sqlite+aiosqlite://").model_copy(update={
        "plugins": "acme,globex,broken", "plugins_block": "globex"}), entry_points=DISCOVERY)
    status = {name: r.status for name, r in host.records.items()}
    assert (status["acme"], status["globex"], status["broken"]) == ("active", "blocked",
                                                                     "failed")
    assert status["typo"] == status["stray"] == "not allowed"
    assert sorted(host.gifts) == ["acme-rocket"]
    host.close()


def test_strict_mode_lists_every_failing_plugin_before_refusing():
    with pytest.raises(PluginStartupError) as refused:
        PluginHost(settings_for("sqlite+aiosqlite://").model_copy(update={
            "plugins": "all", "plugins_strict": True}), entry_points=DISCOVERY)
    lines = str(refused.value).splitlines()
    assert lines[0] == "3 plugins failed, and LIVEGIFTS_PLUGINS_STRICT is on:"
    # In load order: by distribution, then entry-point name (here, with no distribution known,
    # by the entry point's target).
    assert [line.split(":")[0].strip() for line in lines[1:]] == ["broken", "typo", "stray"]


def test_serve_in_strict_mode_names_every_failure_without_a_traceback(tmp_path):
    env = {**os.environ, "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'strict.db'}",
           "LIVEGIFTS_PLUGINS": "none", "LIVEGIFTS_PLUGINS_STRICT": "true",
           "LIVEGIFTS_PLUGIN_MODULES": "tests.sample_plugins.broken_import,"
                                       "tests.sample_plugins.misspelled,app.errors"}
    done = subprocess.run([sys.executable, "-m", "app", "serve", "--port", "1"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "Error: 3 plugins failed, and LIVEGIFTS_PLUGINS_STRICT is on:" in done.stderr
    assert "tests.sample_plugins.broken_import: import failed: ImportError" in done.stderr
    assert "tests.sample_plugins.misspelled: registration failed" in done.stderr
    assert ("app.errors: registration failed: ValueError: it registers no hooks: mark its "
            "hook functions with @hookimpl") in done.stderr


def test_a_module_that_registers_no_hooks_is_reported_as_failed():
    host = PluginHost(settings_for("sqlite+aiosqlite://").model_copy(update={
        "plugin_modules": "tests.sample_plugins"}))  # the package, not the module with hooks
    record = host.records["tests.sample_plugins"]
    assert record.status == "failed"
    assert record.error.startswith("registration failed: ValueError: it registers no hooks")
    host.close()


class Counting(Acme):
    """Acme, counting its quotes; each quote may wait for the test to let it answer."""

    def __init__(self) -> None:
        super().__init__()
        import threading

        self.quotes, self.asked, self.answer = 0, threading.Event(), threading.Event()
        self.answer.set()

    @hookimpl
    def quote_gift(self, send):
        self.quotes += 1
        self.asked.set()
        self.answer.wait(5)
        return super().quote_gift(send)



async def test_a_plugin_answers_while_the_batch_holds_no_lock(postgres_database_url):
    """A sponsored gift's plugin is asked before its batch locks the wallets: a slow plugin
    does not hold up other writers' locks (on PostgreSQL, where writers wait on locks)."""
    import asyncio

    import asyncpg
    from sqlalchemy.engine import make_url

    from app.services.users import coin_account
    from app.testing import audit

    plugin = Counting()
    plugin.answer.clear()
    async with core_with(postgres_database_url, ("acme", plugin)) as runtime:
        stage, fan = await funded_stage(runtime)
        async with runtime.sessions() as session:
            wallet = (await coin_account(session, fan)).id
        sending = asyncio.create_task(_send(runtime, stage, fan, "acme-rocket", 1, None))
        assert await asyncio.to_thread(plugin.asked.wait, 5)
        url = make_url(postgres_database_url)
        other = await asyncpg.connect(user=url.username, host=url.host, port=url.port,
                                      database=url.database)
        try:
            async with other.transaction():  # raises if the batch held the wallet
                assert await other.fetchval("SELECT id FROM ledger_account WHERE id = $1 "
                                            "FOR UPDATE NOWAIT", wallet) == wallet
        finally:
            await other.close()
        plugin.answer.set()
        receipt = await asyncio.wait_for(sending, 10)
        assert (receipt.coins_paid, receipt.brand_subsidy, plugin.quotes) == (25, 25, 1)
        async with runtime.sessions() as session:
            assert await audit(session) == []


async def test_a_batch_written_again_does_not_ask_the_plugin_again(database_url, monkeypatch):
    import asyncio

    from app.services import gifting

    plugin = Counting()
    async with core_with(database_url, ("acme", plugin)) as runtime:
        stage, fan = await funded_stage(runtime)
        other = await new_viewer(runtime, "other-fan", 100)
        accept = gifting._Batch.accept

        async def accept_but_break_on_the_other_fan(self, request):
            if request.sender_id == other:
                raise RuntimeError("broken")
            return await accept(self, request)

        monkeypatch.setattr(gifting._Batch, "accept", accept_but_break_on_the_other_fan)
        sponsored, broken = await asyncio.gather(
            _send(runtime, stage, fan, "acme-rocket", 2, None),
            _send(runtime, stage, other, "rose", 1, None), return_exceptions=True)
        assert isinstance(broken, RuntimeError)
        assert (sponsored.coins_paid, sponsored.brand_subsidy) == (50, 50)
        assert plugin.quotes == 1  # asked once, before the batch; not again when rewritten


@pytest.mark.parametrize("mode, hook", [("check-raises", "check_send"),
                                        ("listener-raises-first", "gift_sent")])
async def test_plugin_failures_are_logged_with_their_traceback_and_each_sends_request_id(
        database_url, mode, hook):
    """Two sends at once, each in its own request: each failure of the plugin (asked whether
    to allow the send, or told of it, later, from the event log) is logged under that send's
    request id, with the traceback."""
    import asyncio

    from app.observability import REQUEST_ID

    seen: list[tuple[str, str | None, bool]] = []

    class Remember(logging.Handler):
        def emit(self, record):
            seen.append((record.getMessage(), REQUEST_ID.get(), record.exc_info is not None))

    async def send_as(request_id, *args):
        REQUEST_ID.set(request_id)
        return await _send(*args)

    handler = Remember(logging.ERROR)
    logging.getLogger("livegifts.plugins").addHandler(handler)
    try:
        async with core_with(database_url, ("acme", Acme(mode=mode))) as runtime:
            stage, fan = await funded_stage(runtime)
            other = await new_viewer(runtime, "other-fan", 1000)
            await asyncio.gather(
                send_as("request-1", runtime, stage, fan, "acme-rocket", 1, None),
                send_as("request-2", runtime, stage, other, "acme-rocket", 1, None),
                return_exceptions=True)
            await gifting.written(runtime.sessions)
            for hours in range(3):  # told in order: each retry, an hour on, gets one further
                await runtime.deliver_events(now=lambda h=hours: utcnow() + timedelta(hours=h))
    finally:
        logging.getLogger("livegifts.plugins").removeHandler(handler)
    assert sorted((request_id, traced) for message, request_id, traced in seen
                  if f"failed: {hook} raised" in message) == [
        ("request-1", True), ("request-2", True)], seen


KIT_ALONE = '''
import importlib
from datetime import UTC, datetime

import pytest

from app.errors import DomainError


async def test_a_gift_through_the_kit(livegifts):
    await livegifts.start()
    stage = await livegifts.go_live("creator")
    fan = await livegifts.viewer("fan", coins=100)
    price = (await livegifts.catalogue())["rose"].coin_price
    receipt = await livegifts.send(fan, stage, "rose")
    assert receipt.coins_paid == price
    assert (await livegifts.wallet(fan)).coins == 100 - price
    with pytest.raises(DomainError):
        await livegifts.send(fan, stage, "rose", quantity=10_000)
    assert await livegifts.audit() == []


def test_a_plain_test_freezes_the_kit_clock(livegifts):
    at = livegifts.clock.freeze(datetime(2027, 1, 1, tzinfo=UTC))
    assert livegifts.clock() == at


def test_no_async_pytest_plugin_can_be_imported():
    for name in ASYNC_PYTEST_PLUGINS:
        with pytest.raises(ImportError):
            importlib.import_module(name)
'''

# As if only livegifts and pytest were installed: every async pytest plugin fails to import.
ASYNC_PYTEST_PLUGINS = ("pytest_asyncio", "anyio.pytest_plugin", "pytest_trio",
                        "pytest_aiohttp", "pytest_tornasync")
# PathFinder finds every installed module, for imports and for pytest's assertion rewriter.
NO_ASYNC_PLUGINS = f"""import importlib.machinery

find_spec = importlib.machinery.PathFinder.find_spec


def refusing(cls, name, path=None, target=None):
    return None if name in {ASYNC_PYTEST_PLUGINS!r} else find_spec(name, path, target)


importlib.machinery.PathFinder.find_spec = classmethod(refusing)
"""


def test_the_tutorial_package_runs_on_the_kit_with_pytest_alone(tmp_path):
    """The partner guide's tutorial package, as written there (its pyproject.toml, plugin
    and test), plus async and plain tests of the kit, run with pytest where no async pytest
    plugin can be imported (pytest-asyncio, anyio's, ...: refused by a sitecustomize, and
    their entry points disabled), without configuration and without a warning."""
    guide = (ROOT / "docs" / "plugins.md").read_text()
    package = tmp_path / "livegifts-fizz"
    for block in re.findall(r"```(?:toml|python)\n# (\S+)\n(.*?)```", guide, re.S):
        name, text = block
        if name in ("pyproject.toml", "livegifts_fizz/__init__.py", "tests/test_fizz.py"):
            (package / name).parent.mkdir(parents=True, exist_ok=True)
            (package / name).write_text(text)
    (package / "tests" / "test_partner.py").write_text(
        f"ASYNC_PYTEST_PLUGINS = {ASYNC_PYTEST_PLUGINS!r}\n{KIT_ALONE}")
    refusing = tmp_path / "refusing"
    refusing.mkdir()
    (refusing / "sitecustomize.py").write_text(NO_ASYNC_PLUGINS)
    ran = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:asyncio", "-p", "no:anyio",
                          "-p", "no:cacheprovider", "-q", "livegifts-fizz"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": f"{refusing}{os.pathsep}{package}"})
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "4 passed" in ran.stdout and "warning" not in ran.stdout.lower(), ran.stdout
