"""OpenAI grader templates: ``{{item.field}}`` and ``{{sample.output_text}}`` inside grader inputs and run prompts.

A template is checked before anything runs: every variable must be in a known namespace and, for ``item``, a
property of the eval's ``item_schema``. Rendering never evaluates code; it only substitutes values.
"""

from __future__ import annotations

import json
import re
from typing import Any

from sage_ft.errors import ConfigError

_VAR = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\s*\}\}")
SAMPLE_FIELDS = frozenset({"output_text", "output_json"})


def variables(template: str) -> list[str]:
    """The dotted variable names a template uses, in order (``["item.question", "sample.output_text"]``)."""
    return [m.group(1) for m in _VAR.finditer(template)]


def check_template(template: str, param: str, item_properties: set[str] | None, sample: bool) -> None:
    """Raise a ConfigError naming ``param`` and the variable when a template refers to something no run will have.

    ``item_properties``: the top-level properties the item schema declares (None: any). ``sample``: whether the
    ``sample`` namespace exists here (grader inputs: yes; the prompt that produces the sample: no).
    """
    if template.count("{{") != len(variables(template)):
        raise ConfigError(
            f"{param}: malformed template variable; write {{{{item.<field>}}}} or {{{{sample.output_text}}}}",
            param=param,
        )
    for var in variables(template):
        space, _, rest = var.partition(".")
        field = rest.split(".", 1)[0]
        if space == "item" and field:
            if item_properties is not None and field not in item_properties:
                known = ", ".join(sorted(item_properties)) or "none"
                raise ConfigError(
                    f"{param}: {{{{{var}}}}} is not a field of item_schema (it has: {known})", param=param
                )
        elif space == "sample" and field in SAMPLE_FIELDS:
            if not sample:
                raise ConfigError(
                    f"{param}: {{{{{var}}}}} is not available here: the sample does not exist yet", param=param
                )
        else:
            raise ConfigError(
                f"{param}: unknown template variable {{{{{var}}}}}; use item.<field> or sample.output_text", param=param
            )


def _lookup(context: dict[str, Any], var: str) -> Any:
    value: Any = context
    for part in var.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(var)
        value = value[part]
    return value


def render(template: str, item: dict[str, Any], sample: dict[str, Any] | None = None) -> str:
    """Substitute every variable; strings as they are, anything else as JSON. A missing field is a KeyError."""
    context = {"item": item, "sample": sample or {}}

    def value(match: re.Match[str]) -> str:
        found = _lookup(context, match.group(1))
        return found if isinstance(found, str) else json.dumps(found)

    return _VAR.sub(value, template)
