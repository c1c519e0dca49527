"""The plugin manager: built per app, loads the core's defaults and installed plugins."""

from __future__ import annotations

import pluggy

from app import hookspecs
from app.payments import PaymentProvider
from app.settings import Settings

DEFAULT_PLUGINS = ("app.sandbox",)


def create_plugin_manager() -> pluggy.PluginManager:
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    for module_name in DEFAULT_PLUGINS:
        manager.register(__import__(module_name, fromlist=["_"]), name=module_name)
    manager.load_setuptools_entrypoints(hookspecs.PROJECT)
    manager.check_pending()
    return manager


def payment_providers(manager: pluggy.PluginManager, settings: Settings
                      ) -> dict[str, PaymentProvider]:
    providers: dict[str, PaymentProvider] = {}
    for batch in manager.hook.register_payment_providers(settings=settings):
        for provider in batch:
            if provider.name in providers:
                raise RuntimeError(f"payment provider {provider.name!r} is registered twice")
            providers[provider.name] = provider
    return providers
