"""``python -m app`` is the ``livegifts`` command."""

from app.cli import main

main()
