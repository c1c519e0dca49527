"""Brands bound to the distribution that owns them: an unrelated package declaring a
bound slug is refused whatever the load order, a slug two packages declare goes to neither
until an operator binds it, and a new brand waits for approval when it is not automatic."""

from __future__ import annotations

import importlib.metadata
from contextlib import asynccontextmanager
from types import SimpleNamespace

import pytest
from sqlalchemy import select, update

from app.models import Brand, BrandOwner, Gift
from app.plugins import PluginHost
from app.runtime import Runtime
from app.services.brands import approve_brand, bind_brand, campaign_report
from tests.gifting_support import send
from tests.support import livegifts_cli, settings_for, snapshot
from tests.test_plugins import funded_stage

REAL, OTHER = "livegifts-acme", "acme-tools"
REAL_ERROR = ("declaration refused: brand 'acme' belongs to distribution 'livegifts-acme', "
              "not 'acme-tools' (an operator moves it with 'livegifts brands bind acme "
              "DISTRIBUTION')")


def installed(name: str, target: str, distribution: str) -> importlib.metadata.EntryPoint:
    entry_point = importlib.metadata.EntryPoint(name=name, value=target, group="livegifts")
    return entry_point._for(SimpleNamespace(name=distribution, version="1.0"))


ACME = installed("acme", "tests.sample_plugins.acme:plugin", REAL)
IMPOSTOR = installed("acme-tools", "tests.sample_plugins.acme:impostor", OTHER)
ORDERS = pytest.mark.parametrize("order", [(ACME, IMPOSTOR), (IMPOSTOR, ACME)],
                                 ids=["real-first", "impostor-first"])


@asynccontextmanager
async def core_installed(database_url: str, *entry_points, **settings):
    config = settings_for(database_url).model_copy(update={"plugins": "all", **settings})
    runtime = Runtime.build(config, PluginHost(config, entry_points=list(entry_points)))
    await runtime.sync_catalogue()
    try:
        yield runtime
    finally:
        await runtime.close()


def status(runtime) -> dict[str, tuple[str, str | None]]:
    return {name: (record.status, record.error) for name, record in
            runtime.plugins.records.items() if name in ("acme", "acme-tools")}


@ORDERS
async def test_an_unrelated_package_cannot_take_a_bound_brand(database_url, order):
    """Acme's brand, bound when its package first ran, stays its own when an unrelated
    package declaring the same slug and gift is installed beside it: the sends are priced
    by Acme's rules (50 % subsidy, not the impostor's 99 %), and the report is Acme's."""
    async with core_installed(database_url, ACME) as runtime:
        stage, fan = await funded_stage(runtime)
        first = await send(runtime, fan, stage, "acme-rocket")
    async with core_installed(database_url, *order) as runtime:
        assert status(runtime) == {"acme": ("active", None), "acme-tools": ("failed", REAL_ERROR)}
        receipt = (await send(runtime, fan, stage, "acme-rocket")).receipt
        assert (receipt.coins_paid, receipt.brand_subsidy) == (25, 25)
        async with runtime.sessions() as session:
            report = await campaign_report(session, "acme")
            plugin = await session.scalar(select(Gift.plugin).where(Gift.sku == "acme-rocket"))
        assert (report.total.sends, report.total.subsidy, plugin) == (2, 50, "acme")
        assert first.receipt.brand_subsidy == 25


@ORDERS
async def test_a_new_brand_two_packages_declare_goes_to_neither_until_bound(database_url, order):
    async with core_installed(database_url, *order) as runtime:
        both = ("declaration refused: brand 'acme' is declared by distributions "
                "'acme-tools', 'livegifts-acme'; none has it until an operator runs "
                "'livegifts brands bind acme DISTRIBUTION'")
        assert status(runtime) == {"acme": ("failed", both), "acme-tools": ("failed", both)}
        async with runtime.sessions() as session:
            assert await session.scalar(select(Brand.id)) is None
            assert await session.scalar(select(BrandOwner.slug)) is None
        bound = await bind_brand(runtime.sessions, "acme", "Livegifts_Acme")
        assert (bound.distribution, bound.approved) == (REAL, False)
        await approve_brand(runtime.sessions, "acme")
    async with core_installed(database_url, *order) as runtime:
        assert status(runtime) == {"acme": ("active", None), "acme-tools": ("failed", REAL_ERROR)}
        stage, fan = await funded_stage(runtime)
        assert (await send(runtime, fan, stage, "acme-rocket")).receipt.brand_subsidy == 25


async def test_a_new_brand_waits_for_approval_when_not_automatic(database_url):
    async with core_installed(database_url, ACME, brands_auto_approve=False) as runtime:
        assert runtime.plugins.records["acme"].pending == ["acme"]
        async with runtime.sessions() as session:
            assert await session.scalar(select(Gift.id).where(Gift.sku == "acme-rocket")) is None
        approved = await approve_brand(runtime.sessions, "acme")
        assert (approved.distribution, approved.approved) == (REAL, True)
        await runtime.sync_catalogue()  # what 'livegifts brands approve' does next
        assert runtime.plugins.records["acme"].pending == []
        stage, fan = await funded_stage(runtime)
        assert (await send(runtime, fan, stage, "acme-rocket")).receipt.brand_subsidy == 25


async def test_a_brand_from_before_bindings_is_bound_to_its_plugin_at_next_start(database_url):
    """Brands live before bindings were kept (no distribution recorded) go to the plugin
    named in their brand row, and are bound to its distribution from then on."""
    async with core_installed(database_url, ACME) as runtime:
        async with runtime.sessions() as session, session.begin():
            await session.execute(update(BrandOwner).values(distribution=None))
    async with core_installed(database_url, IMPOSTOR, ACME) as runtime:
        assert status(runtime)["acme-tools"] == (
            "failed", "declaration refused: brand 'acme' belongs to plugin 'acme'")
        async with runtime.sessions() as session:
            assert await session.scalar(select(BrandOwner.distribution)) == REAL


@pytest.mark.parametrize("args, message", [
    (["bind", "Acme!", "livegifts-acme"], "'Acme!' is not a brand slug (lowercase letters, "
                                          "digits and '-', at most 40). Nothing was changed."),
    (["bind", "acme", "not a package"], "'not a package' is not a package name. Nothing was "
                                        "changed."),
    (["approve", "nobody"], "No plugin has declared brand 'nobody' and none is bound to it: "
                            "nothing to approve. Nothing was changed."),
])
async def test_binding_and_approving_refuse_bad_input_and_change_nothing(database_url, args,
                                                                         message):
    async with core_installed(database_url, ACME):
        pass
    before = await snapshot(database_url)
    done = livegifts_cli(database_url, "brands", *args)
    assert done.returncode == 1 and f"Error: {message}" in done.stderr, done.stderr
    assert await snapshot(database_url) == before


async def test_the_brands_commands_bind_approve_and_list(database_url):
    async with core_installed(database_url, ACME, brands_auto_approve=False):
        pass
    assert "acme  " in (listed := livegifts_cli(database_url, "brands", "list").stdout)
    assert "livegifts-acme" in listed and "awaiting approval" in listed
    moved = livegifts_cli(database_url, "brands", "bind", "acme", "acme-tools")
    assert moved.returncode == 0 and "bound to distribution 'acme-tools'" in moved.stdout
    approved = livegifts_cli(database_url, "brands", "approve", "acme")
    assert approved.returncode == 0, approved.stderr
    assert "is approved; its gifts join the catalogue when a server with its plugin starts" \
        in approved.stdout
    assert "acme-tools" in (listed := livegifts_cli(database_url, "brands", "list").stdout)
    assert "approved" in listed and "awaiting" not in listed
