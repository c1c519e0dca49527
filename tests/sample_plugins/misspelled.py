"""A plugin with a misspelled hook name: caught when it registers."""

from app import hookimpl


@hookimpl
def quote_gfit(send):
    return None
