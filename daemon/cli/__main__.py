"""``python -m daemon.cli``: the same as the ``outboxd`` script."""

from daemon.cli.entry import main

main()
