"""Training and evaluating encoders (the bundled encoder's heads, retrieval metrics). Not imported by any
query path: the runtime encoders live in :mod:`rsrag.tools.encoders`."""

__all__: list[str] = []  # modules: train (heads), evaluate (retrieval metrics)
