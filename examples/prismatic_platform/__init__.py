"""An example Celery app shaped like the seed article's supervision tree."""
