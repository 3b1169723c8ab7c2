"""Trained LiT projection heads that ship with rsrag (the towers come from their PyPI packages)."""

__all__: list[str] = []  # data only: the heads files
