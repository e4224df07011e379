"""Routing: which assistant a call gets, and which per-call variables it carries."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastagi_server.routing import (
    MAX_CALL_VARIABLES,
    MAX_MATCH_CHARS,
    MAX_VALUE_CHARS,
    RouteDecision,
    RouteInput,
    call_variables,
    choose_assistant,
    clean_value,
)
from media_sidecar.config.loader import load_config, parse_config
from media_sidecar.config.schema import Config, Match, RoutingConfig, Rule

ASSISTANTS = """
assistants:
  receptionist: {}
  sales: {}
  support: {}
  night: {}
"""


def config(routing: str = "", assistants: str = ASSISTANTS) -> Config:
    return parse_config(assistants + routing, "test.yaml", env={})


def with_rules(cfg: Config, *rules: Rule) -> Config:
    """Replace the rules; the loader cannot build query/variables conditions yet (see
    test_config.py::test_rules_with_query_and_variables_load), so tests build rules here."""
    return dataclasses.replace(cfg, routing=dataclasses.replace(cfg.routing, rules=rules))


RULES = """
routing:
  default: receptionist
  rules:
    - match: {dnid: "5551000"}
      assistant: sales
    - match: {extension: "7[0-9]{3}", context: "from-internal"}
      assistant: support
    - match: {callerid: "\\\\+44.*"}
      assistant: night
    - match: {script: "agent/sales"}
      assistant: sales
"""


# -- precedence -----------------------------------------------------------------------------------


def test_channel_variable_wins_over_rules_and_query() -> None:
    cfg = config(RULES)
    req = RouteInput(
        dnid="5551000",
        query={"assistant": "support"},
        variables={"AI_ASSISTANT": "night"},
    )
    assert choose_assistant(cfg, req) == RouteDecision("night", "channel variable AI_ASSISTANT")


def test_query_assistant_wins_over_rules() -> None:
    cfg = config(RULES)
    req = RouteInput(script="agent", query={"assistant": "support"}, dnid="5551000")
    assert choose_assistant(cfg, req) == RouteDecision("support", "query assistant")


def test_empty_or_blank_override_is_not_an_override() -> None:
    cfg = config(RULES)
    req = RouteInput(dnid="5551000", query={"assistant": ""}, variables={"AI_ASSISTANT": "  "})
    assert choose_assistant(cfg, req) == RouteDecision("sales", "rule 1")


def test_override_value_is_trimmed() -> None:
    decision = choose_assistant(config(), RouteInput(variables={"AI_ASSISTANT": " sales\t"}))
    assert decision.assistant == "sales"


@pytest.mark.parametrize(
    ("req", "source"),
    [
        (RouteInput(variables={"AI_ASSISTANT": "salse"}), "channel variable AI_ASSISTANT"),
        (RouteInput(query={"assistant": "salse"}), "query assistant"),
    ],
)
def test_unknown_override_fails_fast_never_silently_defaults(req: RouteInput, source: str) -> None:
    decision = choose_assistant(config(RULES), req)
    assert decision == RouteDecision(None, source, "unknown assistant 'salse'")
    assert not decision.ok


def test_unknown_channel_variable_is_an_error_even_if_query_is_valid() -> None:
    req = RouteInput(query={"assistant": "sales"}, variables={"AI_ASSISTANT": "nope"})
    decision = choose_assistant(config(), req)
    assert decision.error == "unknown assistant 'nope'"
    assert decision.assistant is None


def test_override_disabled_ignores_both_and_says_so() -> None:
    cfg = config(RULES.replace("routing:\n", "routing:\n  allow_channel_override: false\n"))
    req = RouteInput(
        dnid="5551000", query={"assistant": "night"}, variables={"AI_ASSISTANT": "nope"}
    )
    decision = choose_assistant(cfg, req)
    assert (decision.assistant, decision.matched_by, decision.error) == ("sales", "rule 1", "")
    assert decision.notes == (
        "channel variable AI_ASSISTANT 'nope' ignored: routing.allow_channel_override is off",
        "query assistant 'night' ignored: routing.allow_channel_override is off",
    )


def test_default_when_no_rule_matches() -> None:
    req = RouteInput(dnid="5559999", extension="s", context="from-pstn")
    assert choose_assistant(config(RULES), req) == RouteDecision("receptionist", "default")


def test_first_assistant_without_default_or_rules() -> None:
    assert choose_assistant(config(), RouteInput()) == RouteDecision(
        "receptionist", "first assistant"
    )


def test_no_assistants_is_an_error_not_a_crash() -> None:
    decision = choose_assistant(Config(), RouteInput())
    assert decision == RouteDecision(None, "", "no assistants configured")


def test_embedded_default_routes_support_script_and_defaults_otherwise() -> None:
    cfg = load_config(None, env={})
    assert choose_assistant(cfg, RouteInput(script="agent/support")).matched_by == "rule 1"
    assert choose_assistant(cfg, RouteInput(script="agent")) == RouteDecision(
        "receptionist", "default"
    )


# -- rules ----------------------------------------------------------------------------------------


def test_rules_are_tried_in_order_first_match_wins() -> None:
    cfg = config(
        """
routing:
  rules:
    - match: {extension: "7.*"}
      assistant: support
    - match: {extension: "7000"}
      assistant: sales
"""
    )
    assert choose_assistant(cfg, RouteInput(extension="7000")) == RouteDecision("support", "rule 1")


def test_rule_numbers_count_from_one() -> None:
    req = RouteInput(callerid="+441632960000")
    assert choose_assistant(config(RULES), req) == RouteDecision("night", "rule 3")


def test_every_condition_of_a_rule_must_match() -> None:
    cfg = config(RULES)
    assert choose_assistant(cfg, RouteInput(extension="7001", context="from-internal")) == (
        RouteDecision("support", "rule 2")
    )
    # Right extension, wrong context: rule 2 does not apply.
    assert choose_assistant(cfg, RouteInput(extension="7001", context="from-pstn")).matched_by == (
        "default"
    )


@pytest.mark.parametrize(
    ("field", "pattern", "value", "matches"),
    [
        ("dnid", "5551000", "5551000", True),
        ("dnid", "5551000", "55510001", False),  # full match, not search
        ("dnid", "5551000", "15551000", False),
        ("dnid", "555.*", "5551000", True),
        ("extension", "7[0-9]{3}", "7000", True),
        ("extension", "7[0-9]{3}", "70000", False),
        ("extension", "7[0-9]{3}", "7000\n", False),  # no $-before-newline loophole
        ("callerid", "\\+?1?555.*", "+15550100", True),
        ("callerid", "", "", True),  # AgiRequest gives "" for a missing caller ID
        ("callerid", "", "5550100", False),
        ("context", "from-(internal|pstn)", "from-pstn", True),
        ("context", "from-(internal|pstn)", "from-pstn-toheader", False),
        ("script", "agent/.*", "agent/sales", True),
        ("script", "agent", "agent/sales", False),
    ],
)
def test_regex_conditions_are_full_matches(
    field: str, pattern: str, value: str, matches: bool
) -> None:
    changes: dict[str, Any] = {field: pattern}
    match = dataclasses.replace(Match(), **changes)
    req = dataclasses.replace(RouteInput(), **{**changes, field: value})
    decision = choose_assistant(with_rules(config(), Rule(match, "sales")), req)
    assert (decision.assistant == "sales") is matches


def test_regex_conditions_are_case_sensitive() -> None:
    cfg = with_rules(config(), Rule(Match(context="from-internal"), "sales"))
    assert choose_assistant(cfg, RouteInput(context="FROM-INTERNAL")).assistant == "receptionist"


def test_rule_without_conditions_catches_everything() -> None:
    cfg = config("routing:\n  rules:\n    - {match: {}, assistant: night}\n")
    assert choose_assistant(cfg, RouteInput()) == RouteDecision("night", "rule 1")


def test_query_conditions_are_exact_pairs() -> None:
    cfg = with_rules(
        config(),
        Rule(Match(query=(("queue", "vip"), ("lang", "de"))), "sales"),
    )
    assert choose_assistant(cfg, RouteInput(query={"queue": "vip", "lang": "de", "x": "1"})) == (
        RouteDecision("sales", "rule 1")
    )
    for query in (
        {"queue": "vip"},
        {"queue": "VIP", "lang": "de"},
        {"queue": "vip ", "lang": "de"},
    ):
        assert choose_assistant(cfg, RouteInput(query=query)).matched_by == "first assistant"


def test_variable_conditions_are_exact_pairs() -> None:
    cfg = with_rules(config(), Rule(Match(variables=(("AI_VAR_TIER", "gold"),)), "support"))
    req = RouteInput(variables={"AI_VAR_TIER": "gold"})
    assert choose_assistant(cfg, req) == RouteDecision("support", "rule 1")
    for variables in ({}, {"AI_VAR_TIER": "gold\n"}, {"AI_VAR_TIER": "Gold"}):
        assert choose_assistant(cfg, RouteInput(variables=variables)).assistant == "receptionist"


def test_regex_and_pair_conditions_combine() -> None:
    rule = Rule(Match(script="agent", query=(("dept", "sales"),)), "sales")
    cfg = with_rules(config(), rule)
    assert choose_assistant(cfg, RouteInput(script="agent", query={"dept": "sales"})).ok
    hit = choose_assistant(cfg, RouteInput(script="other", query={"dept": "sales"}))
    assert hit.matched_by == "first assistant"


# -- robustness -----------------------------------------------------------------------------------


def test_overlong_value_never_reaches_the_regex() -> None:
    cfg = with_rules(config(), Rule(Match(callerid=".*"), "night"))
    assert choose_assistant(cfg, RouteInput(callerid="1" * MAX_MATCH_CHARS)).assistant == "night"
    long = RouteInput(callerid="1" * (MAX_MATCH_CHARS + 1))
    assert choose_assistant(cfg, long).assistant == "receptionist"


def test_hostile_override_is_shown_escaped_and_short() -> None:
    evil = "x\r\nEXEC System rm\x00" + "A" * 10_000
    decision = choose_assistant(config(), RouteInput(variables={"AI_ASSISTANT": evil}))
    assert decision.assistant is None
    assert decision.error.startswith("unknown assistant 'x\\r\\nEXEC System rm\\x00AAA")
    assert decision.error.endswith(f"... ({len(evil)} chars)")
    assert len(decision.error) < 200
    assert not any(c in decision.error for c in "\r\n\x00")


def test_invalid_regex_in_a_hand_built_config_is_an_error_not_a_crash() -> None:
    cfg = with_rules(config(), Rule(Match(dnid="(unclosed"), "sales"))
    decision = choose_assistant(cfg, RouteInput(dnid="1"))
    assert decision.assistant is None
    assert decision.matched_by == "rule 1"
    assert decision.error.startswith("rule 1: invalid regular expression")


def test_hand_built_rule_naming_unknown_assistant_is_an_error() -> None:
    cfg = dataclasses.replace(config(), routing=RoutingConfig(rules=(Rule(Match(), "ghost"),)))
    assert choose_assistant(cfg, RouteInput()) == RouteDecision(
        None, "rule 1", "unknown assistant 'ghost'"
    )


text = st.text(max_size=300)


@given(
    script=text,
    dnid=text,
    extension=text,
    callerid=text,
    context=text,
    query=st.dictionaries(text, text, max_size=5),
    variables=st.dictionaries(
        st.sampled_from(["AI_ASSISTANT", "AI_LANGUAGE", "AI_VAR_X", "OTHER"]) | text,
        text,
        max_size=6,
    ),
)
def test_any_input_gives_a_decision_never_an_exception(
    script: str,
    dnid: str,
    extension: str,
    callerid: str,
    context: str,
    query: dict[str, str],
    variables: dict[str, str],
) -> None:
    req = RouteInput(script, query, dnid, extension, callerid, context, variables)
    decision = choose_assistant(config(RULES), req)
    assert (decision.assistant is None) == bool(decision.error)
    assert not any(c in decision.error for c in "\r\n\x00")
    if decision.assistant is not None:
        assert decision.assistant in {"receptionist", "sales", "support", "night"}


# -- call variables -------------------------------------------------------------------------------


def test_call_variables_strip_prefix_and_keep_language() -> None:
    got = call_variables(
        {
            "AI_VAR_ACCOUNT": "12345",
            "AI_VAR_customer_name": "Ada Lovelace",
            "AI_LANGUAGE": "de-DE",
            "AI_ASSISTANT": "sales",
            "CALLERID": "5550100",
        }
    )
    assert got == {"ACCOUNT": "12345", "customer_name": "Ada Lovelace", "AI_LANGUAGE": "de-DE"}


@pytest.mark.parametrize(
    "name",
    [
        "AI_VAR_",
        "AI_VAR_A-B",
        "AI_VAR_A B",
        "AI_VAR_" + "N" * 65,
        "AI_VAR_\u00e9",
        "ai_var_x",
        "AI_VAR_X\n",
    ],
)
def test_call_variables_refuse_bad_names(name: str) -> None:
    assert call_variables({name: "v"}) == {}


def test_call_variables_accept_64_char_names() -> None:
    assert call_variables({"AI_VAR_" + "N" * 64: "v"}) == {"N" * 64: "v"}


def test_call_variables_clean_values() -> None:
    got = call_variables({"AI_VAR_NOTE": "line1\r\nline2\x00\x1b[31m\tend\x7f"})
    assert got == {"NOTE": "line1  line2[31m\tend"}


def test_call_variables_cap_values() -> None:
    got = call_variables({"AI_VAR_BIG": "x" * 1_000_000, "AI_VAR_NL": "\n" * 5000})
    assert got["BIG"] == "x" * MAX_VALUE_CHARS
    assert got["NL"] == " " * MAX_VALUE_CHARS


def test_call_variables_keep_empty_values() -> None:
    assert call_variables({"AI_VAR_EMPTY": ""}) == {"EMPTY": ""}


def test_call_variables_are_bounded_in_number() -> None:
    many = {f"AI_VAR_V{i}": str(i) for i in range(MAX_CALL_VARIABLES + 10)}
    got = call_variables({**many, "AI_LANGUAGE": "en"})
    assert len(got) == MAX_CALL_VARIABLES + 1
    assert list(got)[:2] == ["V0", "V1"]
    assert got["AI_LANGUAGE"] == "en"


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        ("en", "en"),
        (" pt_BR ", "pt_BR"),
        ("zh-Hant-TW", "zh-Hant-TW"),
        ("", None),
        ("en\nEXEC", None),
        ("english please", None),
        ("e" * 9, None),
        ("de-" + "x" * 40, None),
    ],
)
def test_call_variables_language_must_look_like_a_tag(value: str, kept: str | None) -> None:
    assert call_variables({"AI_LANGUAGE": value}).get("AI_LANGUAGE") == kept


def test_real_language_wins_over_ai_var_language() -> None:
    got = call_variables({"AI_LANGUAGE": "fr", "AI_VAR_AI_LANGUAGE": "evil"})
    assert got == {"AI_LANGUAGE": "fr"}
    assert call_variables({"AI_VAR_AI_LANGUAGE": "es"}) == {"AI_LANGUAGE": "es"}


def test_call_variables_ignore_non_string_entries() -> None:
    assert call_variables({"AI_VAR_N": 5, 7: "x", "AI_LANGUAGE": None}) == {}  # type: ignore[dict-item]


@given(st.dictionaries(st.text(max_size=80), st.text(max_size=3000), max_size=50))
def test_call_variables_invariants(variables: dict[str, str]) -> None:
    got = call_variables(variables)
    assert len(got) <= MAX_CALL_VARIABLES + 1
    for name, value in got.items():
        assert len(name) <= 64
        assert len(value) <= MAX_VALUE_CHARS
        assert not any(c in value for c in "\r\n\x00")


def test_clean_value_limit() -> None:
    assert clean_value("abc\ndef", limit=5) == "abc d"
