"""``python -m serve.openai_server``: see :mod:`serve.openai_server.cli`."""

from serve.openai_server.cli import main

main()
