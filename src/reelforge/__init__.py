"""reelforge: a self-hostable video generation service speaking the Hailuo-02 contract."""

__version__ = "0.1.0"
