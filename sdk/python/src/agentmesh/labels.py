"""Label selectors: a dict of exact matches, the compact text form, or the message itself."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TypeAlias

from agentmesh.v1 import registry_pb2

#: What callers may pass as a label selector.
LabelSelectorLike: TypeAlias = str | Mapping[str, str] | registry_pb2.LabelSelector

_Operator = registry_pb2.LabelRequirement
_set_expression = re.compile(r"^([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)$")


def parse_label_selector(text: str) -> registry_pb2.LabelSelector:
    """Parses ``env=prod,tier in (a|b),!canary,gpu`` (the syntax of ``agentmesh ctl`` and the TS SDK)."""
    selector = registry_pb2.LabelSelector()
    for raw_part in text.split(","):
        part = raw_part.strip()
        if not part:
            continue
        set_match = _set_expression.match(part)
        if set_match:
            key, operator, values = set_match.groups()
            selector.match_expressions.add(
                key=key,
                operator=_Operator.OPERATOR_IN if operator == "in" else _Operator.OPERATOR_NOT_IN,
                values=[value.strip() for value in values.split("|") if value.strip()],
            )
        elif "=" in part:
            key, _, value = part.partition("=")
            selector.match_labels[key.strip()] = value.strip()
        elif part.startswith("!"):
            selector.match_expressions.add(key=part[1:], operator=_Operator.OPERATOR_DOES_NOT_EXIST)
        else:
            selector.match_expressions.add(key=part, operator=_Operator.OPERATOR_EXISTS)
    return selector


def to_label_selector(selector: LabelSelectorLike | None) -> registry_pb2.LabelSelector | None:
    if selector is None:
        return None
    if isinstance(selector, registry_pb2.LabelSelector):
        return selector
    if isinstance(selector, str):
        return parse_label_selector(selector)
    return registry_pb2.LabelSelector(match_labels=dict(selector))
