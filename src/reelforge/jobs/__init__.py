"""Durable job storage: the records and interfaces (``model``), the bookkeeping both backends
share (``base``), the backends (``sqlite`` on ``sqlitefile``, ``postgres`` with its
``listener``) and the schema migrations of both (``migrate``, ``migrations/``)."""
