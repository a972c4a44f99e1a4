"""Evaluation: OpenAI-style evals (templates, graders) used by the gateway's Evals API, workers and the CLI."""

from sage_ft.evals.graders import GRADER_TYPES, METRICS, Grade, grade, parse_criteria, similarity
from sage_ft.evals.items import check_item_schema, load_rows, rows_from_content
from sage_ft.evals.templates import check_template, render, variables

__all__ = [
    "GRADER_TYPES",
    "METRICS",
    "Grade",
    "check_item_schema",
    "check_template",
    "grade",
    "load_rows",
    "parse_criteria",
    "render",
    "rows_from_content",
    "similarity",
    "variables",
]
