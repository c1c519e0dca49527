"""The plugin host: discovery, validation, status and isolated calls into brand plugins.

One host is built per runtime (never a module global). It registers the core's
default plugins, then every entry point of the group ``livegifts`` that the
settings allow, in order of distribution name then entry-point name, then the
plugin modules named in the settings, in the order named. A plugin that fails to
import, to register (including a misspelled hook) or to declare its brands and
gifts is reported and skipped, or stops the start when ``LIVEGIFTS_PLUGINS_STRICT``
is on.

Which plugin owns a brand is settled (:meth:`PluginHost.settle`) from the bindings
the database keeps (slug to distribution): only the bound distribution's plugin may
declare the brand, whatever the load order; a new slug declared by one plugin is
bound to it, and one declared by several is given to none until an operator binds it.

Each plugin is called behind its own bulkhead: its own threads
(``LIVEGIFTS_PLUGIN_THREADS``), a bounded number of calls waiting for them
(``LIVEGIFTS_PLUGIN_MAX_WAITING``), and a circuit breaker that refuses its calls at
once after ``LIVEGIFTS_PLUGIN_BREAKER_FAILURES`` failures in a row, until a probe
call succeeds after ``LIVEGIFTS_PLUGIN_BREAKER_COOLDOWN_SECONDS``. A call past the
time limit frees its caller at the limit; a hung call keeps only its own plugin's
thread, and counts only against its own plugin.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import importlib.metadata
import logging
import math
import queue
import re
import threading
import time
import types
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pluggy

from app import hookspecs, media
from app.observability import (
    LOOP_LAG,
    PLUGIN_BREAKER_OPEN,
    PLUGIN_FAILURES,
    PLUGIN_REFUSALS,
    REQUEST_STARTED,
)
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
    """Plugins failed while ``LIVEGIFTS_PLUGINS_STRICT`` is on; the message lists each."""

    @classmethod
    def listing(cls, records: Iterable[PluginRecord]) -> PluginStartupError:
        failed = [r for r in records if r.status == FAILED]
        return cls(f"{len(failed)} plugin{'s' * (len(failed) != 1)} failed, and "
                   "LIVEGIFTS_PLUGINS_STRICT is on:\n" +
                   "\n".join(f"  {r.name}: {r.error}" for r in failed))


class PluginCallFailed(Exception):
    """A plugin raised, ran out of time or was not asked; ``retry_after`` (seconds) says
    when asking again may succeed, if the host knows."""

    def __init__(self, plugin: str, reason: str, retry_after: int | None = None) -> None:
        super().__init__(f"plugin {plugin!r} {reason}")
        self.plugin, self.reason, self.retry_after = plugin, reason, retry_after


CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


@dataclass
class Breaker:
    """A plugin's circuit breaker: ``threshold`` failures in a row open it; while open,
    calls are refused at once; after ``cooldown`` seconds one call (the probe) is let
    through, and its outcome closes or reopens the breaker."""

    threshold: int
    cooldown: float
    failures_in_a_row: int = 0
    opened_at: float | None = None
    probing: bool = False

    def state(self, now: float) -> str:
        if self.opened_at is None:
            return CLOSED
        return OPEN if self.probing or now < self.opened_at + self.cooldown else HALF_OPEN

    def wait(self, now: float) -> int | None:
        """While open, the seconds until a call may be let through; else None."""
        if self.state(now) != OPEN:
            return None
        assert self.opened_at is not None
        return max(1, math.ceil(self.opened_at + self.cooldown - now))

    def admit(self, now: float) -> None:
        """A call goes ahead: when half-open, it is the probe."""
        if self.state(now) == HALF_OPEN:
            self.probing = True

    def succeeded(self) -> None:
        self.failures_in_a_row, self.opened_at, self.probing = 0, None, False

    def abandoned(self) -> None:
        """Its caller gave up on a call (cancelled): that tells nothing of the plugin, and
        a probe abandoned so must not keep the breaker open for good."""
        self.probing = False

    def failed(self, now: float) -> None:
        self.failures_in_a_row += 1
        if self.probing or self.failures_in_a_row >= self.threshold:
            self.opened_at, self.probing = now, False


class Threads:
    """A plugin's own worker threads. Daemon threads, unlike ``ThreadPoolExecutor``'s: a
    call that never returns does not keep the server from stopping."""

    def __init__(self, count: int, name: str) -> None:
        self._work: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = \
            queue.SimpleQueue()
        self._count = count
        for number in range(count):
            threading.Thread(target=self._run, name=f"{name}-{number}", daemon=True).start()

    def submit(self, call: Callable[[], Any]) -> Future[Any]:
        future: Future[Any] = Future()
        self._work.put((future, call))
        return future

    def _run(self) -> None:
        while (item := self._work.get()) is not None:
            future, call = item
            if not future.set_running_or_notify_cancel():
                continue  # its caller gave up while it waited
            try:
                future.set_result(call())
            except BaseException as exc:
                future.set_exception(exc)

    def close(self) -> None:
        """Drop the calls still waiting; each thread ends after its current call."""
        with contextlib.suppress(queue.Empty):
            while True:
                item = self._work.get_nowait()
                if item is not None:
                    item[0].cancel()
        for _ in range(self._count):
            self._work.put(None)


@dataclass(frozen=True)
class Declared:
    """What one plugin declared, checked on its own; who owns what is settled later."""

    brands: dict[str, Brand]
    gifts: dict[str, SponsoredGift]


@dataclass
class Bulkhead:
    """What one plugin's calls may use: its own threads, the calls in them or waiting
    for them (including calls whose callers gave up), and its breaker."""

    threads: Threads
    capacity: int  # threads plus calls allowed to wait for one
    breaker: Breaker
    in_flight: set[Future[Any]] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class Sponsor:
    """The plugin that owns a sponsored gift, and the gift's name."""

    plugin: str
    name: str


@dataclass
class PluginRecord:
    name: str
    version: str
    status: str
    hooks: list[str] = field(default_factory=list)
    gifts: list[str] = field(default_factory=list)
    brands: list[str] = field(default_factory=list)
    error: str | None = None
    distribution: str = ""  # the installed package it comes from (its name, normalised)
    pending: list[str] = field(default_factory=list)  # its brands awaiting approval
    failures: int = 0
    timeouts: int = 0  # of the failures, calls that did not answer in time
    breaker: str = CLOSED
    last_failure: str | None = None
    last_failure_at: datetime | None = None


def _installed_entry_points() -> list[importlib.metadata.EntryPoint]:
    return list(importlib.metadata.entry_points(group=hookspecs.PROJECT))


class PluginHost:
    def __init__(self, settings: Settings,
                 entry_points: Iterable[importlib.metadata.EntryPoint] | None = None,
                 extra_plugins: Iterable[tuple[str, object]] = (),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock  # what breakers' cool-downs are measured on
        self.manager = pluggy.PluginManager(hookspecs.PROJECT)
        self.manager.add_hookspecs(hookspecs)
        self.records: dict[str, PluginRecord] = {}
        # The brands and gifts each plugin owns, once settled: slug/sku -> (plugin, it).
        self.brands: dict[str, tuple[str, Brand]] = {}
        self.gifts: dict[str, tuple[str, SponsoredGift]] = {}
        self._declared: dict[str, Declared] = {}  # by plugin, in load order
        self._bulkheads: dict[str, Bulkhead] = {}
        # Gift id -> its owner, once the catalogue is synced (Runtime.sync_catalogue).
        self.sponsored: dict[int, Sponsor] = {}
        for module_name in DEFAULT_PLUGINS:
            module = importlib.import_module(module_name)
            self.manager.register(module, name=module_name)
            self.records[module_name] = PluginRecord(module_name, "core", ACTIVE,
                                                     self._hooks_of(module))
        if entry_points is None:
            entry_points = [] if settings.plugins.strip() == "none" else _installed_entry_points()
        for entry_point in sorted(entry_points,
                                  key=lambda e: (_distribution_of(e), e.name)):
            self._load(entry_point.name, _version(entry_point), entry_point.load,
                       _distribution_of(entry_point), installed=True)
        # Plugins named explicitly (by import path or by a test) skip the allow-list.
        for path in filter(None, (p.strip() for p in settings.plugin_modules.split(","))):
            self._load(path, "local", functools.partial(_import_object, path),
                       _module_distribution(path))
        for name, plugin in extra_plugins:
            self._load(name, "local", lambda plugin=plugin: plugin, name)
        self.settle()
        self.check_strict()

    def check_strict(self) -> None:
        """With ``LIVEGIFTS_PLUGINS_STRICT`` on, refuse to go on if any plugin failed,
        naming every one."""
        if self.settings.plugins_strict and any(r.status == FAILED
                                                for r in self.records.values()):
            raise PluginStartupError.listing(self.records.values())

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

    def _load(self, name: str, version: str, load: Any, distribution: str,
              installed: bool = False) -> None:
        refusal = self._allowed(name, installed)
        if refusal:
            self.records[name] = PluginRecord(name, version, refusal,
                                              distribution=distribution)
            return
        stage = "import"
        plugin = None
        try:
            plugin = load()
            stage = "registration"
            self.manager.register(plugin, name=name)
            self.manager.check_pending()  # a hook name no spec knows (a typo) fails here
            if not self._hooks_of(plugin):
                raise ValueError("it registers no hooks: mark its hook functions with "
                                 "@hookimpl (hooks on an object are found when the path names "
                                 "the object, as in 'package.module:object')")
            stage = "declaration"
            record = PluginRecord(name, version, ACTIVE, self._hooks_of(plugin),
                                  distribution=distribution)
            self._declared[name] = self._declare(name)
        except Exception as exc:
            if plugin is not None and self.manager.is_registered(plugin):
                self.manager.unregister(plugin)
            error = f"{stage} failed: {type(exc).__name__}: {exc}"
            logger.error("plugin %s: %s", name, error,
                         extra={"plugin": name, "stage": stage, "error": error})
            self.records[name] = PluginRecord(name, version, FAILED, error=error,
                                              distribution=distribution)
            return
        self.records[name] = record

    def _hooks_of(self, plugin: object) -> list[str]:
        return sorted(caller.name for caller in self.manager.get_hookcallers(plugin) or [])

    def _declare(self, name: str) -> Declared:
        """The plugin's brands and gifts, each valid and declared once by it."""
        brands: dict[str, Brand] = {}
        for brand in self._answers(name, "register_brands"):
            if not isinstance(brand, Brand) or not SLUG.match(brand.slug) or not brand.name:
                raise ValueError(f"invalid brand {brand!r}")
            if brand.slug in brands:
                raise ValueError(f"brand {brand.slug!r} is declared twice")
            brands[brand.slug] = brand
        gifts: dict[str, SponsoredGift] = {}
        for gift in self._answers(name, "register_sponsored_gifts"):
            if not isinstance(gift, SponsoredGift) or not GIFT_SKU.match(gift.sku) or \
                    type(gift.coin_price) is not int or gift.coin_price < 1:
                raise ValueError(f"invalid sponsored gift {gift!r}")
            if gift.brand not in brands:
                raise ValueError(f"gift {gift.sku!r} names brand {gift.brand!r}, "
                                 "which this plugin does not declare")
            if gift.sku in gifts:
                raise ValueError(f"gift {gift.sku!r} is declared twice")
            if (gift.image_url is None) == (gift.image_file is None):
                raise ValueError(f"gift {gift.sku!r} needs a picture: image_url or "
                                 "image_file, one of them")
            if gift.image_file is not None:
                media.suffix(gift.image_file)
                if not media.picture_file(gift.image_file).is_file():
                    raise ValueError(f"gift {gift.sku!r}: image_file {gift.image_file!s} "
                                     "is not a file in the package")
            gifts[gift.sku] = gift
        return Declared(brands, gifts)

    def picture(self, filename: str) -> Any | None:
        """The picture file a plugin ships for one of its gifts, by the name it is served
        under (``<sku>.svg``), or None."""
        for sku, (_, gift) in self.gifts.items():
            if gift.image_file is not None and \
                    media.brand_image(sku, gift.image_file) == media.BRAND_ART + filename:
                return media.picture_file(gift.image_file)
        return None

    def settle(self, owners: Mapping[str, str | None] | None = None,
               named: Mapping[str, str] | None = None) -> dict[str, str]:
        """Decide which plugin owns each declared brand and gift, from ``owners`` (the
        bound distribution of each slug the database knows; None for a brand from before
        bindings, bound to the plugin ``named`` in its brand row). Returns the bindings
        to record: slugs seen for the first time (declared by one plugin only) and slugs
        bound anew. A plugin that declares a brand it may not have is refused whole."""
        owners, named = owners or {}, named or {}
        claims: dict[str, list[str]] = {}
        for plugin, declared in self._declared.items():
            for slug in declared.brands:
                claims.setdefault(slug, []).append(plugin)
        refused: dict[str, str] = {}
        for slug, plugins in claims.items():
            for plugin in plugins:
                why = self._may_not_have(slug, plugin, plugins, owners, named)
                if why:
                    refused.setdefault(plugin, why)
        self.brands, self.gifts, bindings = {}, {}, {}
        for plugin, declared in self._declared.items():
            record = self.records[plugin]
            record.pending = []
            taken = next((sku for sku in declared.gifts if sku in self.gifts), None)
            if taken and plugin not in refused:
                refused[plugin] = f"gift {taken!r} is declared by {self.gifts[taken][0]!r} too"
            if plugin in refused:
                record.status, record.error = FAILED, f"declaration refused: {refused[plugin]}"
                record.brands, record.gifts = [], []
                continue
            record.status, record.error = ACTIVE, None
            record.brands, record.gifts = sorted(declared.brands), sorted(declared.gifts)
            self.brands.update({slug: (plugin, b) for slug, b in declared.brands.items()})
            self.gifts.update({sku: (plugin, g) for sku, g in declared.gifts.items()})
            bindings.update({slug: record.distribution for slug in declared.brands
                             if owners.get(slug) is None})
        for plugin, why in refused.items():
            logger.error("plugin %s: declaration refused: %s", plugin, why,
                         extra={"plugin": plugin, "stage": "declaration", "error": why})
        return bindings

    def _may_not_have(self, slug: str, plugin: str, claimants: list[str],
                      owners: Mapping[str, str | None], named: Mapping[str, str]) -> str | None:
        """Why ``plugin`` may not have brand ``slug`` (None if it may)."""
        distribution = self.records[plugin].distribution
        if slug in owners and owners[slug] is not None:
            if owners[slug] == distribution:
                return None
            return (f"brand {slug!r} belongs to distribution {owners[slug]!r}, not "
                    f"{distribution!r} (an operator moves it with 'livegifts brands bind "
                    f"{slug} DISTRIBUTION')")
        if slug in owners:  # bound before bindings were kept: to the plugin of that name
            if named.get(slug) == plugin:
                return None
            return f"brand {slug!r} belongs to plugin {named.get(slug)!r}"
        if len(claimants) == 1:
            return None
        others = sorted({self.records[p].distribution for p in claimants})
        return (f"brand {slug!r} is declared by distributions {', '.join(map(repr, others))}; "
                f"none has it until an operator runs 'livegifts brands bind {slug} "
                "DISTRIBUTION'")

    def implements(self, plugin: str, hook: str) -> bool:
        return any(impl.plugin_name == plugin
                   for impl in getattr(self.manager.hook, hook).get_hookimpls())

    def owns(self, plugin: str, brand: str | None) -> bool:
        """Whether ``plugin`` is active and the owner of ``brand``: only the owner's answers
        may price, subsidise or draw on a brand's budget."""
        return self.is_active(plugin) and brand is not None and \
            self.brands.get(brand, ("",))[0] == plugin

    def _answers(self, name: str, hook: str) -> list[Any]:
        results: list[Any] = []
        for impl in getattr(self.manager.hook, hook).get_hookimpls():
            if impl.plugin_name == name:
                arguments = {"config": self.config_of(name)}
                results.extend(impl.function(**{a: arguments[a] for a in impl.argnames})
                               or [])
        return results

    def config_of(self, plugin: str) -> Mapping[str, Any]:
        """The plugin's own settings: ``LIVEGIFTS_PLUGIN_CONFIG[plugin]``, read-only."""
        return types.MappingProxyType(self.settings.plugin_config.get(plugin, {}))

    # Calls ------------------------------------------------------------------------------

    def is_active(self, name: str) -> bool:
        record = self.records.get(name)
        return record is not None and record.status == ACTIVE

    async def call_owner(self, plugin: str, hook: str, **kwargs: Any) -> Any:
        """Call ``hook`` on one plugin only, behind its bulkhead, within the time limit.

        Returns the plugin's answer (``None`` if it does not implement the hook); raises
        :class:`PluginCallFailed` when it raises or runs out of time, and at once, without
        calling it, while its breaker is open or its threads and queue are full.
        """
        impls = [impl for impl in getattr(self.manager.hook, hook).get_hookimpls()
                 if impl.plugin_name == plugin]
        if not impls:
            return None
        impl, bulkhead, now = impls[0], self._bulkhead(plugin), self.clock()
        wait = bulkhead.breaker.wait(now)
        if wait is not None:
            self._refuse(plugin, hook, "breaker open")
            raise PluginCallFailed(plugin, f"{hook} was not asked: paused after "
                                   f"{bulkhead.breaker.failures_in_a_row} failures in a row",
                                   retry_after=wait)
        if len(bulkhead.in_flight) >= bulkhead.capacity:
            self._refuse(plugin, hook, "busy")
            raise PluginCallFailed(plugin, f"{hook} was not asked: all of its "
                                   f"{bulkhead.capacity} places are taken", retry_after=1)
        timeout = self.settings.plugin_timeout_seconds
        if _left(timeout, room=0) < timeout * FAIR_SHARE:  # the request used the time, not it
            self._refuse(plugin, hook, "no time left")
            raise PluginCallFailed(plugin, f"{hook} was not asked: the request had used its "
                                   f"{timeout:g} s before the plugin's turn", retry_after=1)
        bulkhead.breaker.admit(now)
        _hook_called.set(hook)
        # In the plugin's thread too, log lines carry the id of the request being served.
        kwargs = {**kwargs, "config": self.config_of(plugin)}
        call = functools.partial(contextvars.copy_context().run, impl.function,
                                 **{a: kwargs[a] for a in impl.argnames})
        running = bulkhead.threads.submit(call)
        bulkhead.in_flight.add(running)
        running.add_done_callback(bulkhead.in_flight.discard)
        try:
            answer = await _answer_within(running, timeout)
        except asyncio.CancelledError:
            bulkhead.breaker.abandoned()
            raise
        except TimeoutError:
            self.record_failure(plugin, f"{hook} did not answer within {timeout:g} s", hook,
                                timed_out=True)
            raise PluginCallFailed(plugin, f"{hook} did not answer within {timeout:g} s") \
                from None
        except Exception as exc:
            reason = f"{hook} raised {type(exc).__name__}: {exc}"
            self.record_failure(plugin, reason, hook, error=exc)
            raise PluginCallFailed(plugin, reason) from None
        bulkhead.breaker.succeeded()
        self._show_breaker(plugin)
        return answer

    def _bulkhead(self, plugin: str) -> Bulkhead:
        bulkhead = self._bulkheads.get(plugin)
        if bulkhead is None:
            threads = self.settings.plugin_threads
            bulkhead = self._bulkheads[plugin] = Bulkhead(
                Threads(threads, f"plugin-{plugin}"),
                threads + self.settings.plugin_max_waiting,
                Breaker(self.settings.plugin_breaker_failures,
                        self.settings.plugin_breaker_cooldown_seconds))
        return bulkhead

    def sponsor_of(self, gift_id: int) -> Sponsor | None:
        """The active plugin that owns the gift, if it is a sponsored gift of one."""
        sponsor = self.sponsored.get(gift_id)
        return sponsor if sponsor is not None and self.is_active(sponsor.plugin) else None

    def paused(self, plugin: str) -> int | None:
        """While the plugin's breaker is open, the seconds until it may be asked again."""
        bulkhead = self._bulkheads.get(plugin)
        wait = None if bulkhead is None else bulkhead.breaker.wait(self.clock())
        if wait is not None:
            self._refuse(plugin, "check_send", "breaker open")
        return wait

    def in_flight(self, plugin: str) -> int:
        """The plugin's calls running or waiting for its threads (hung ones included)."""
        bulkhead = self._bulkheads.get(plugin)
        return 0 if bulkhead is None else len(bulkhead.in_flight)

    def breaker_state(self, plugin: str) -> str:
        bulkhead = self._bulkheads.get(plugin)
        return CLOSED if bulkhead is None else bulkhead.breaker.state(self.clock())

    def _show_breaker(self, plugin: str) -> None:
        state = self.breaker_state(plugin)
        record = self.records.get(plugin)
        if record is not None:
            record.breaker = state
        PLUGIN_BREAKER_OPEN.labels(plugin).set(state != CLOSED)

    def _refuse(self, plugin: str, hook: str, why: str) -> None:
        PLUGIN_REFUSALS.labels(plugin, hook, why).inc()

    def record_failure(self, plugin: str, reason: str, hook: str | None = None, *,
                       timed_out: bool = False, error: BaseException | None = None) -> None:
        """Log a plugin failure with the plugin's name and hook (and the traceback of the
        ``error`` it raised), count it, and tell the plugin's breaker.

        ``hook`` defaults to the hook this task last called on a plugin.
        """
        hook = hook or _hook_called.get() or "unknown"
        self._bulkhead(plugin).breaker.failed(self.clock())
        self._show_breaker(plugin)
        record = self.records.get(plugin)
        if record is not None:
            record.failures += 1
            record.timeouts += timed_out
            record.last_failure = f"{hook}: {reason}"
            record.last_failure_at = datetime.now(UTC)
        PLUGIN_FAILURES.labels(plugin, hook).inc()
        logger.error("plugin %s failed: %s", plugin, reason, exc_info=error,
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
        for bulkhead in self._bulkheads.values():
            bulkhead.threads.close()


def _import_object(path: str) -> object:
    module_name, _, attribute = path.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attribute) if attribute else module


DISTRIBUTION = re.compile(r"^[a-z0-9]([a-z0-9-]{0,198}[a-z0-9])?$")  # normalised, PEP 508


def normalised_distribution(name: str) -> str:
    """A distribution name as package indexes compare them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


def _distribution_of(entry_point: importlib.metadata.EntryPoint) -> str:
    dist = getattr(entry_point, "dist", None)
    if dist is None:
        return f"unknown:{entry_point.value}"
    return normalised_distribution(dist.name)


def _module_distribution(path: str) -> str:
    """The installed distribution providing the module at ``path``, or ``module:<path>``."""
    top = path.partition(":")[0].split(".")[0]
    found = importlib.metadata.packages_distributions().get(top)
    return normalised_distribution(found[0]) if found else f"module:{path.partition(':')[0]}"


def _version(entry_point: importlib.metadata.EntryPoint) -> str:
    dist = getattr(entry_point, "dist", None)
    return dist.version if dist is not None else "unknown"


# A call is made only with at least this share of the time limit left; a request that used
# more (its body, its queueing, earlier calls) is refused without asking the plugin, and
# that is not counted against the plugin or its breaker.
FAIR_SHARE = 0.25


# Under load a request waits for four turns of the event loop that its own clock cannot
# see or that come after its answer is decided: before it is read (accepted first, on a new
# connection), before its task first runs, before the time-out's timer fires and before the
# task it wakes runs. Each takes up to about the loop's lag, so a call in a request leaves
# four times the recent lag, up to this share of the limit, for the sender's whole wait to
# stay within the limit.
LAG_TURNS = 4
QUEUEING_SHARE = 0.2


def _left(limit: float, room: float | None = None) -> float:
    """How long a plugin call may still take: the time limit counts from the arrival of
    the request being served (all of a send's plugin calls share it, and its queueing
    and reads count) and leaves ``room`` (by default, from the loop's recent lag) for the
    answer's own queueing, or from now outside a request (notifications)."""
    started = REQUEST_STARTED.get()
    if started is None:
        return limit
    if room is None:
        try:
            now: float | None = asyncio.get_running_loop().time()
        except RuntimeError:  # no loop: no lag either
            now = None
        room = min(LAG_TURNS * LOOP_LAG.recent(now), limit * QUEUEING_SHARE)
    return max(limit - (time.perf_counter() - started) - room, 0)


async def _answer_within(running: Future[Any], limit: float) -> Any:
    """The call's answer, or TimeoutError once the time left for it has passed; the caller
    is freed then, and a call still waiting for a thread is dropped. In a request the room
    kept for the answer is decided as late as it can be: once the least time the call can
    have has passed, by the loop's lag as it is then (a burst of load may have begun
    since the call started)."""
    waiting = asyncio.wrap_future(running)
    try:
        done: set[Any] = set()
        if REQUEST_STARTED.get() is not None:
            least = _left(limit, room=limit * QUEUEING_SHARE)
            done, _ = await asyncio.wait({waiting}, timeout=least)
        if not done:
            done, _ = await asyncio.wait({waiting}, timeout=_left(limit))
    except asyncio.CancelledError:
        waiting.cancel()
        raise
    if not done:
        waiting.cancel()  # not awaited: the caller is answered without another turn
        raise TimeoutError
    return waiting.result()
