"""Scripted benchmarks: each measured side by side with its peer in one run.

Every benchmark module exposes ``run(scale="tiny"|"small"|"full", callback=None) -> dict``
with its figures, the peer's figures and their ratios.
"""
SCALES = ("tiny", "small", "full")
