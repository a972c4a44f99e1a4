"""An eval's ``testing_criteria``: graders (``sage_ft.graders``, every OpenAI type) with unique names."""

from __future__ import annotations

from typing import Any

from sage_ft.errors import ConfigError
from sage_ft.graders import AnyGrader, check_templates, parse_grader


def parse_criteria(raw: Any, item_properties: set[str] | None) -> list[AnyGrader]:
    """Validate ``testing_criteria``; every error is a ConfigError naming ``testing_criteria.<i>.<field>``."""
    if not isinstance(raw, list) or not raw:
        raise ConfigError("testing_criteria: give at least one grader", param="testing_criteria")
    criteria = [parse_grader(entry, f"testing_criteria.{i}", item_properties) for i, entry in enumerate(raw)]
    check_criteria(criteria, item_properties)
    return criteria


def check_criteria(criteria: list[AnyGrader], item_properties: set[str] | None) -> None:
    """Graders already valid by their schema: their templates read only the item's fields, and names are unique."""
    for i, criterion in enumerate(criteria):
        check_templates(criterion, f"testing_criteria.{i}", item_properties)
    names = [c.name for c in criteria]
    if len(set(names)) != len(names):
        raise ConfigError("testing_criteria: grader names must be unique", param="testing_criteria")
