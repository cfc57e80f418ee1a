"""The API's depth scan agrees with a parser on any JSON, strings full of brackets,
quotes and backslashes included: it decides what is refused before FastAPI parses."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from shadowdns.api.limits import json_depth

TRICKY = st.text(alphabet='ab"\\[]{}\n\u00e9', max_size=8)
documents = st.recursive(
    st.none() | st.booleans() | st.integers() | TRICKY,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TRICKY, inner, max_size=3),
    max_leaves=30)


def parsed_depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((parsed_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((parsed_depth(v) for v in value.values()), default=0)
    return 0


@settings(max_examples=400)
@given(documents, st.booleans())
def test_scan_matches_the_parsed_depth(document: Any, ascii_only: bool) -> None:
    body = json.dumps(document, ensure_ascii=ascii_only).encode()
    assert json_depth(body) == parsed_depth(document)
