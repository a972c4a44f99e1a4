"""Evaluation: OpenAI-style evals (items, testing criteria, runs) used by the gateway's Evals API, workers and the
CLI. Templates and graders are ``sage_ft.graders``, shared with reinforcement fine-tuning."""

from sage_ft.evals.graders import parse_criteria
from sage_ft.evals.items import check_item_schema, load_rows, rows_from_content

__all__ = ["check_item_schema", "load_rows", "parse_criteria", "rows_from_content"]
