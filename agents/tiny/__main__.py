"""``python -m agents.tiny``: see :mod:`agents.tiny.cli`."""

from agents.tiny.cli import main

main()
