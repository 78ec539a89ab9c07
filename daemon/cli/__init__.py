"""The ``outboxd`` command line: :mod:`.main` parses the arguments; each command group has
a module that registers its commands and runs them."""
