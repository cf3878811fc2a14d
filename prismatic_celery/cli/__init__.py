"""The ``celery supervision`` command group and its subcommands."""
