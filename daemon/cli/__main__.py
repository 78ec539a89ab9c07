"""``python -m daemon.cli``: the same as the ``outboxd`` script."""

from daemon.cli.main import main

main()
