"""Flower configuration shipped by prismatic-celery: ``celery -A proj flower --conf=<this file>``.

Flower executes this file before it builds its web application: it mounts
``/supervision`` and ``/api/supervision`` and adds the supervision metrics to
Flower's ``/metrics`` (see :mod:`prismatic_celery.observability.flower`). Flower's own options
still come from the command line or ``FLOWER_*`` variables (``--basic-auth``,
``--port``, ``--address``...). To combine it with settings of your own, write your
own config file that calls ``prismatic_celery.observability.flower.install()``.

Names defined here become Flower options when they match one, so nothing but
underscore-prefixed names is defined.
"""

from prismatic_celery.observability.flower import install as _install

_install()
