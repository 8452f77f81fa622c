"""Registry entries (``REELFORGE_MODELS`` TOML) for the tiny checkpoints of
``tests.tiny_models`` and ``tests.tiny_h3``: float32 on the CPU, a 64x64 canvas."""

from __future__ import annotations


def tiny_entry(model_id: str, engine: str, weights: str, steps: int, *extra: str) -> str:
    """The ``[models."<model_id>"]`` table for a tiny checkpoint in ``weights``; ``extra``
    lines (``first_frame = false``, ...) are added as written."""
    lines = [
        f'[models."{model_id}"]',
        f'engine = "{engine}"',
        f'weights = "{weights}"',
        'dtype = "float32"',
        'device = "cpu"',
        f"steps = {steps}",
        "canvas = [64, 64]",
        *extra,
    ]
    return "\n".join(lines) + "\n"


TEXT_ONLY = ("first_frame = false", "last_frame = false")
"""What a text-to-video checkpoint (Wan T2V) declares."""
