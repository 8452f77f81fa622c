"""Versioned schema migrations, one directory of numbered SQL files per dialect.

``sqlite/NNNN_name.sql`` and ``postgres/NNNN_name.sql`` carry the same versions and are applied
in version order by ``reelforge.jobs.migrate``; a file, once released, is never edited: a
change is a new file with the next number, in both directories.
"""
