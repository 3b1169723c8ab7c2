"""Trained LiT projection heads that ship with rsrag (the towers come from their PyPI packages)."""
