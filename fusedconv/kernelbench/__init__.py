"""KernelBench deliverable for level 2, problem 69: the problem files and shapes (``problems``),
the single-file ``ModelNew`` exporter (``exporter``) and the KernelBench-protocol evaluator
(``evaluator``); ``export`` and ``evaluate`` are their entry functions.
"""

from fusedconv.kernelbench.evaluator import evaluate, format_report
from fusedconv.kernelbench.exporter import (EXPORT_LINE_LENGTH, EXPORT_NAMESPACE, ExportError,
                                            export, export_source)
from fusedconv.kernelbench.problems import REFERENCE_V0_1_SOURCE

__all__ = ["ExportError", "export_source", "export", "evaluate", "format_report",
           "REFERENCE_V0_1_SOURCE", "EXPORT_NAMESPACE", "EXPORT_LINE_LENGTH"]
