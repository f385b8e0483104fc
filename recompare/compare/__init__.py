"""The main job: train both families and their folding variants on one data set,
evaluate them under every protocol it supports, measure training and serving
cost, and answer each row of the source document's comparison with numbers.

Python API::

    from recompare.compare import run_comparison
    results = run_comparison(recompare.load_dataset("data/planted"), quick=True)
    results["table"]   # one row per question, with measured values and a verdict

The parts: :mod:`.variants` (what is trained), :mod:`.run` (orchestration),
:mod:`.cost` (training and serving cost, read-only memory measurement),
:mod:`.verdicts` (the table and its prose), :mod:`.results` (the shapes returned).
"""
from __future__ import annotations

from .cost import MEMORY_RESOLUTION, measure_cost, serving_cost, steps_run
from .results import ComparisonResults, ModelRecord, TableRow
from .run import run_comparison, training_scaling
from .variants import Variant, default_variants, quick_params
from .verdicts import PAR, comparison_table

__all__ = [
    "MEMORY_RESOLUTION", "PAR", "ComparisonResults", "ModelRecord", "TableRow", "Variant",
    "comparison_table", "default_variants", "measure_cost", "quick_params", "run_comparison",
    "serving_cost", "steps_run", "training_scaling",
]
