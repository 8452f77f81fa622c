"""Versioned schema migrations, one directory of numbered SQL files per dialect.

``postgres/NNNN_name.sql`` files are applied in version order by ``reelforge.jobs.migrate``;
a file, once released, is never edited: a change is a new file with the next number.
"""
