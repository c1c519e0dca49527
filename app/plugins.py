"""The plugin host: discovery, validation, status and isolated calls into brand plugins.

One host is built per runtime (never a module global). It registers the core's
default plugins, then every entry point of the group ``livegifts`` that the
settings allow. A plugin that fails to import, to register (including a
misspelled hook) or to declare its brands and gifts is reported and skipped, or
stops the start when ``LIVEGIFTS_PLUGINS_STRICT`` is on.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import importlib.metadata
import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pluggy

from app import hookspecs
from app.observability import PLUGIN_FAILURES
from app.payments import PaymentProvider, PayoutProvider
from app.services.catalogue import SKU as GIFT_SKU
from app.settings import Settings
from app.sponsorship import SLUG, Brand, SponsoredGift

logger = logging.getLogger("livegifts.plugins")
# The hook this task last called on a plugin: an answer found invalid later came from it.
_hook_called: contextvars.ContextVar[str] = contextvars.ContextVar("hook_called", default="")

DEFAULT_PLUGINS = ("app.sandbox",)
ACTIVE, FAILED, BLOCKED, NOT_ALLOWED = "active", "failed", "blocked", "not allowed"


class PluginStartupError(RuntimeError):
    """A plugin failed while ``LIVEGIFTS_PLUGINS_STRICT`` is on."""


class PluginCallFailed(Exception):
    """A plugin raised or ran out of time; it has been logged and counted."""

    def __init__(self, plugin: str, reason: str) -> None:
        super().__init__(f"plugin {plugin!r} {reason}")
        self.plugin, self.reason = plugin, reason


@dataclass
class PluginRecord:
    name: str
    version: str
    status: str
    hooks: list[str] = field(default_factory=list)
    gifts: list[str] = field(default_factory=list)
    brands: list[str] = field(default_factory=list)
    error: str | None = None
    failures: int = 0


def _installed_entry_points() -> list[importlib.metadata.EntryPoint]:
    return list(importlib.metadata.entry_points(group=hookspecs.PROJECT))


class PluginHost:
    def __init__(self, settings: Settings,
                 entry_points: Iterable[importlib.metadata.EntryPoint] | None = None,
                 extra_plugins: Iterable[tuple[str, object]] = ()) -> None:
        self.settings = settings
        self.manager = pluggy.PluginManager(hookspecs.PROJECT)
        self.manager.add_hookspecs(hookspecs)
        self.records: dict[str, PluginRecord] = {}
        self.brands: dict[str, tuple[str, Brand]] = {}  # slug -> (plugin, brand)
        self.gifts: dict[str, tuple[str, SponsoredGift]] = {}  # sku -> (plugin, gift)
        self._executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="plugin")
        for module_name in DEFAULT_PLUGINS:
            module = importlib.import_module(module_name)
            self.manager.register(module, name=module_name)
            self.records[module_name] = PluginRecord(module_name, "core", ACTIVE,
                                                     self._hooks_of(module))
        if entry_points is None:
            entry_points = [] if settings.plugins.strip() == "none" else _installed_entry_points()
        for entry_point in entry_points:
            self._load(entry_point.name, _version(entry_point), entry_point.load,
                       installed=True)
        # Plugins named explicitly (by import path or by a test) skip the allow-list.
        for path in filter(None, (p.strip() for p in settings.plugin_modules.split(","))):
            self._load(path, "local", functools.partial(_import_object, path))
        for name, plugin in extra_plugins:
            self._load(name, "local", lambda plugin=plugin: plugin)

    # Discovery --------------------------------------------------------------------------

    def _allowed(self, name: str, installed: bool) -> str | None:
        blocked = {n.strip() for n in self.settings.plugins_block.split(",") if n.strip()}
        if name in blocked:
            return BLOCKED
        allow = self.settings.plugins.strip()
        if installed and allow not in ("all", "") and \
                name not in {n.strip() for n in allow.split(",")}:
            return NOT_ALLOWED
        return None

    def _load(self, name: str, version: str, load: Any, installed: bool = False) -> None:
        refusal = self._allowed(name, installed)
        if refusal:
            self.records[name] = PluginRecord(name, version, refusal)
            return
        stage = "import"
        plugin = None
        try:
            plugin = load()
            stage = "registration"
            self.manager.register(plugin, name=name)
            self.manager.check_pending()  # a hook name no spec knows (a typo) fails here
            stage = "declaration"
            record = PluginRecord(name, version, ACTIVE, self._hooks_of(plugin))
            self._declare(name, record)
        except Exception as exc:
            if plugin is not None and self.manager.is_registered(plugin):
                self.manager.unregister(plugin)
            error = f"{stage} failed: {type(exc).__name__}: {exc}"
            logger.error("plugin %s: %s", name, error,
                         extra={"plugin": name, "stage": stage, "error": error})
            if self.settings.plugins_strict:
                raise PluginStartupError(f"plugin {name!r}: {error}") from exc
            self.records[name] = PluginRecord(name, version, FAILED, error=error)
            return
        self.records[name] = record

    def _hooks_of(self, plugin: object) -> list[str]:
        return sorted(caller.name for caller in self.manager.get_hookcallers(plugin) or [])

    def _declare(self, name: str, record: PluginRecord) -> None:
        """Collect and check the plugin's brands and gifts; commit them only if all are valid."""
        brands: dict[str, Brand] = {}
        for brand in self._declared(name, "register_brands"):
            if not isinstance(brand, Brand) or not SLUG.match(brand.slug) or not brand.name:
                raise ValueError(f"invalid brand {brand!r}")
            if brand.slug in self.brands or brand.slug in brands:
                raise ValueError(f"brand {brand.slug!r} is declared twice")
            brands[brand.slug] = brand
        gifts: dict[str, SponsoredGift] = {}
        for gift in self._declared(name, "register_sponsored_gifts"):
            if not isinstance(gift, SponsoredGift) or not GIFT_SKU.match(gift.sku) or \
                    type(gift.coin_price) is not int or gift.coin_price < 1:
                raise ValueError(f"invalid sponsored gift {gift!r}")
            if gift.brand not in brands:
                raise ValueError(f"gift {gift.sku!r} names brand {gift.brand!r}, "
                                 "which this plugin does not declare")
            if gift.sku in self.gifts or gift.sku in gifts:
                raise ValueError(f"gift {gift.sku!r} is declared twice")
            gifts[gift.sku] = gift
        self.brands.update({slug: (name, brand) for slug, brand in brands.items()})
        self.gifts.update({sku: (name, gift) for sku, gift in gifts.items()})
        record.brands, record.gifts = sorted(brands), sorted(gifts)

    def _declared(self, name: str, hook: str) -> list[Any]:
        results: list[Any] = []
        for impl in getattr(self.manager.hook, hook).get_hookimpls():
            if impl.plugin_name == name:
                results.extend(impl.function() or [])
        return results

    # Calls ------------------------------------------------------------------------------

    def is_active(self, name: str) -> bool:
        record = self.records.get(name)
        return record is not None and record.status == ACTIVE

    async def call_owner(self, plugin: str, hook: str, **kwargs: Any) -> Any:
        """Call ``hook`` on one plugin only, in a worker thread, within the time limit.

        Returns the plugin's answer (``None`` if it does not implement the hook); raises
        :class:`PluginCallFailed` when it raises or runs out of time.
        """
        impls = [impl for impl in getattr(self.manager.hook, hook).get_hookimpls()
                 if impl.plugin_name == plugin]
        if not impls:
            return None
        impl = impls[0]
        _hook_called.set(hook)
        # In the plugin's thread too, log lines carry the id of the request being served.
        call = functools.partial(contextvars.copy_context().run, impl.function,
                                 **{a: kwargs[a] for a in impl.argnames})
        timeout = self.settings.plugin_timeout_seconds
        try:
            return await asyncio.wait_for(
                asyncio.get_running_loop().run_in_executor(self._executor, call), timeout)
        except TimeoutError:
            reason = f"{hook} did not answer within {timeout:g} s"
        except Exception as exc:
            reason = f"{hook} raised {type(exc).__name__}: {exc}"
        self.record_failure(plugin, reason, hook)
        raise PluginCallFailed(plugin, reason)

    def record_failure(self, plugin: str, reason: str, hook: str | None = None) -> None:
        """Log a plugin failure with the plugin's name and hook, and count it.

        ``hook`` defaults to the hook this task last called on a plugin.
        """
        hook = hook or _hook_called.get() or "unknown"
        record = self.records.get(plugin)
        if record is not None:
            record.failures += 1
        PLUGIN_FAILURES.labels(plugin, hook).inc()
        logger.error("plugin %s failed: %s", plugin, reason,
                     extra={"plugin": plugin, "hook": hook, "reason": reason})

    def payment_providers(self) -> dict[str, PaymentProvider]:
        return self._providers("register_payment_providers", "payment")

    def payout_providers(self) -> dict[str, PayoutProvider]:
        return self._providers("register_payout_providers", "payout")

    def _providers(self, hook: str, kind: str) -> dict[str, Any]:
        providers: dict[str, Any] = {}
        for batch in getattr(self.manager.hook, hook)(settings=self.settings):
            for provider in batch:
                if provider.name in providers:
                    raise RuntimeError(f"{kind} provider {provider.name!r} is registered twice")
                providers[provider.name] = provider
        return providers

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _import_object(path: str) -> object:
    module_name, _, attribute = path.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attribute) if attribute else module


def _version(entry_point: importlib.metadata.EntryPoint) -> str:
    dist = getattr(entry_point, "dist", None)
    return dist.version if dist is not None else "unknown"
