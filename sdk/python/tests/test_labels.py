from __future__ import annotations

import pytest

from agentmesh.labels import parse_label_selector, to_label_selector
from agentmesh.v1 import registry_pb2

Op = registry_pb2.LabelRequirement


@pytest.mark.parametrize(
    ("text", "labels", "expressions"),
    [
        ("", {}, []),
        ("env=prod", {"env": "prod"}, []),
        (" env = prod , tier=a=b ", {"env": "prod", "tier": "a=b"}, []),
        ("tier in (a|b)", {}, [("tier", Op.OPERATOR_IN, ["a", "b"])]),
        ("tier notin ( a | b )", {}, [("tier", Op.OPERATOR_NOT_IN, ["a", "b"])]),
        ("!canary", {}, [("canary", Op.OPERATOR_DOES_NOT_EXIST, [])]),
        ("gpu", {}, [("gpu", Op.OPERATOR_EXISTS, [])]),
        (
            "env=prod,tier in (a|b),!canary,gpu",
            {"env": "prod"},
            [
                ("tier", Op.OPERATOR_IN, ["a", "b"]),
                ("canary", Op.OPERATOR_DOES_NOT_EXIST, []),
                ("gpu", Op.OPERATOR_EXISTS, []),
            ],
        ),
    ],
)
def test_parses_the_compact_syntax(
    text: str, labels: dict[str, str], expressions: list[tuple[str, int, list[str]]]
) -> None:
    selector = parse_label_selector(text)
    assert dict(selector.match_labels) == labels
    assert [(e.key, e.operator, list(e.values)) for e in selector.match_expressions] == expressions


def test_accepts_a_dict_a_string_or_the_message() -> None:
    message = registry_pb2.LabelSelector(match_labels={"a": "1"})
    assert to_label_selector(None) is None
    assert to_label_selector(message) is message
    assert to_label_selector({"a": "1"}) == message
    assert to_label_selector("a=1") == message
