"""Fuzzing the configuration loader: random YAML documents, the embedded default with one value
replaced by anything, and raw text. Property: a ConfigError naming the file, or a Config;
never another exception."""

from __future__ import annotations

import copy
from typing import Any

import yaml
from hypothesis import given
from hypothesis import strategies as st

from media_sidecar.config.loader import ConfigError, default_yaml_text, parse_config
from media_sidecar.config.schema import Config

from .budget import fuzz
from .strategies import hostile_text

DEFAULT = yaml.safe_load(default_yaml_text())
SOURCE = "fuzz.yaml"
ENV = {"AMI_SECRET": "s"}

yaml_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=10**300, max_value=10**400),
    st.floats(), st.text(max_size=30), hostile_text,
    st.sampled_from(["012", "0x1F", "1e400", "-.inf", ".nan", "2001-13-45", "yes", "~",
                     "${AMI_SECRET}", "${UNSET:-x}", "(" * 300, "a{4294967296}", "[", "*"]),
)
yaml_value: st.SearchStrategy[Any] = st.recursive(
    yaml_scalar,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.text(max_size=10), children, max_size=4)),
    max_leaves=10,
)


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += paths(v, (*prefix, i))
    return out


DEFAULT_PATHS = paths(DEFAULT)[1:]


def replaced(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(DEFAULT)
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc


def load(text: str) -> None:
    try:
        cfg = parse_config(text, SOURCE, ENV)
    except ConfigError as exc:
        assert str(exc).startswith(SOURCE), exc
        return
    assert isinstance(cfg, Config)


def dump(doc: Any) -> str:
    return yaml.safe_dump(doc, allow_unicode=True)


@fuzz(2)
@given(st.sampled_from(DEFAULT_PATHS), yaml_value)
def test_default_config_with_one_value_replaced(path, value):
    try:
        text = dump(replaced(path, value))
    except yaml.YAMLError:  # a lone surrogate PyYAML cannot write
        return
    load(text)


@fuzz()
@given(st.dictionaries(st.sampled_from(sorted(DEFAULT)), yaml_value, max_size=5))
def test_random_documents_over_the_known_sections(doc):
    try:
        text = dump(doc)
    except yaml.YAMLError:
        return
    load(text)


@fuzz()
@given(st.one_of(st.text(max_size=300), hostile_text,
                 st.sampled_from(["[" * 3000, "a: " + "1" * 5000, "a: 2001-13-45",
                                  "a: &x [*x]", "!!binary x", "? [a]\n: b", "\t", "a: !!float x"])))
def test_raw_text(text):
    load(text)
