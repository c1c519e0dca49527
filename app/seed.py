"""Demo data for a first start: coin packages, the gift catalogue, a few users with coins,
a live session by ``demo-creator`` to send gifts into, and a budget for each installed brand.
A data set at benchmark scale is :mod:`app.seeding`."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

from sqlalchemy import select

from app.models import LiveSession
from app.services.brands import fund_budget
from app.services.catalogue import seed_default_gifts
from app.services.coins import list_packages, purchase_coins, seed_default_packages
from app.services.live import start_session
from app.services.users import ensure_user

if TYPE_CHECKING:
    from app.runtime import Runtime

DEMO_VIEWERS = {"demo-viewer": 2, "demo-fan": 1}  # name -> packages of 700 coins bought
DEMO_CREATOR = "demo-creator"
DEMO_ADMIN = "demo-admin"
DEMO_BRAND_BUDGET = 100_000
DEMO_BIRTHDATE = date(1995, 5, 17)


async def seed_demo_data(runtime: Runtime) -> None:
    """Idempotent: running it twice changes nothing the second time."""
    await runtime.sync_catalogue()
    async with runtime.sessions() as session, session.begin():
        await seed_default_packages(session)
        await seed_default_gifts(session)
        users = {name: await ensure_user(session, name, DEMO_BIRTHDATE)
                 for name in [*DEMO_VIEWERS, DEMO_CREATOR, DEMO_ADMIN]}
        if await session.scalar(select(LiveSession.id).limit(1)) is None:
            await start_session(session, users[DEMO_CREATOR].id, "Demo stream: say hi!")
        package = next(p for p in await list_packages(session) if p.sku == "coins-700")
    for slug in runtime.plugins.brands:  # installed brands get a budget to try their gifts
        await fund_budget(runtime.sessions, admin_id=users[DEMO_ADMIN].id, slug=slug,
                          coins=DEMO_BRAND_BUDGET, idempotency_key=f"demo-budget-{slug}")
    sandbox = runtime.payment_providers["sandbox"]
    for name, count in DEMO_VIEWERS.items():
        for n in range(count):
            receipt = sandbox.make_receipt(package.sku, package.price_minor, package.currency,
                                           transaction_id=f"demo-{name}-{n}")
            # Same key and receipt each time: a second seed replays instead of buying again.
            await purchase_coins(runtime.sessions, runtime.payment_providers, runtime.settings,
                                 user_id=users[name].id, package_id=package.id,
                                 provider="sandbox", receipt=receipt,
                                 idempotency_key=f"demo-seed-{n}")
