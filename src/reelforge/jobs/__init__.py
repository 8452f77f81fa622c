"""Durable job storage: the ``JobStore`` interface (``model``) and its backends (``sqlite``,
``postgres``, whose schema ``migrate`` upgrades)."""
