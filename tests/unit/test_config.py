"""The YAML loader: embedded default, environment substitution, and precise errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from media_sidecar.config.loader import (
    ConfigError,
    default_yaml_text,
    load_config,
    parse_config,
)
from media_sidecar.config.schema import Config, Destination

ONE = "assistants: {x: {}}\n"


def parse(text: str, env: dict[str, str] | None = None) -> Config:
    return parse_config(text, "test.yaml", env={} if env is None else env)


def refused(text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text, env)
    return str(info.value)


# -- the embedded default -------------------------------------------------------------------------


def test_embedded_default_loads_without_any_environment() -> None:
    cfg = load_config(None, env={})
    assert cfg.source == "<embedded default>"
    assert cfg.fastagi.listen.port == 4573
    assert cfg.sidecar.audiosocket.port == 9092
    assert 0 < cfg.fastagi.offer_timeout < 1
    assert cfg.ami.port == 5038
    assert not cfg.ami.enabled  # degraded mode: no AMI without AMI_HOST/AMI_USERNAME
    assert cfg.ami.secret == ""
    assert cfg.routing.default == "receptionist"
    receptionist = cfg.assistant("receptionist")
    assert receptionist is not None
    assert receptionist.destination("operator") == Destination(
        "from-internal", "0", "1", "the operator"
    )
    assert receptionist.fallback_destination == "operator"
    assert {m.digit for m in receptionist.brain.dtmf} == {"0", "1", "2", "#"}


def test_embedded_default_takes_ami_from_the_environment() -> None:
    env = {"AMI_HOST": "127.0.0.1", "AMI_PORT": "5039", "AMI_USERNAME": "agi-voice",
           "AMI_SECRET": "s3cret"}  # fmt: skip
    cfg = load_config(None, env=env)
    assert (cfg.ami.host, cfg.ami.port, cfg.ami.username) == ("127.0.0.1", 5039, "agi-voice")
    assert cfg.ami.secret == "s3cret"
    assert cfg.ami.enabled
    assert "s3cret" not in repr(cfg)


def test_load_config_reads_a_file_and_names_it(tmp_path: Path) -> None:
    path = tmp_path / "agi-voice.yaml"
    path.write_text(default_yaml_text(), "utf-8")
    assert load_config(path, env={}).source == str(path)
    path.write_text(ONE + "bogus: 1\n", "utf-8")
    with pytest.raises(ConfigError, match=f"^{path}: bogus: unknown section"):
        load_config(path, env={})


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=f"^{missing}: <top>: cannot read file"):
        load_config(missing, env={})


# -- ${VAR} and ${VAR:-default} -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"PBX": "10.0.0.5"}, "10.0.0.5"),
        ({}, "localhost"),
        ({"PBX": ""}, "localhost"),  # set but empty also takes the default, like the shell
    ],
)
def test_env_default_substitution(env: dict[str, str], expected: str) -> None:
    cfg = parse(ONE + "ami: {host: '${PBX:-localhost}'}", env)
    assert cfg.ami.host == expected


def test_env_substitution_inside_longer_strings_and_lists() -> None:
    text = """
fastagi: {control_url: "ws://${SIDE:-127.0.0.1}:${CPORT:-9093}/control"}
assistants:
  x:
    brain:
      intents:
        - {name: n, reply: "call ${ORG:-us}", keywords: ["${KW:-help}", plain]}
"""
    cfg = parse(text, {"CPORT": "9999", "KW": "assist"})
    assert cfg.fastagi.control_url == "ws://127.0.0.1:9999/control"
    intent = cfg.assistants[0].brain.intents[0]
    assert (intent.reply, intent.keywords) == ("call us", ("assist", "plain"))


def test_unset_variable_without_default_is_empty() -> None:
    assert parse(ONE + "ami: {host: '${NOPE}'}").ami.host == ""


def test_substituted_values_are_not_substituted_again() -> None:
    cfg = parse(ONE + "ami: {host: '${A}'}", {"A": "${B}", "B": "oops"})
    assert cfg.ami.host == "${B}"


def test_substituted_number_is_converted_and_checked() -> None:
    assert parse(ONE + "ami: {port: '${P:-5038}'}", {"P": "6000"}).ami.port == 6000
    assert refused(ONE + "ami: {port: '${P:-5038}'}", {"P": "abc"}) == (
        "test.yaml: ami.port: expected an integer, got 'abc'"
    )


# -- errors name the file, the key path and what was expected -------------------------------------


def test_unknown_key_names_file_and_key_path() -> None:
    message = refused("assistants: {x: {brain: {foo: 1}}}")
    assert message.startswith("test.yaml: assistants.x.brain.foo: unknown key")
    assert "greeting" in message  # says what was expected


@pytest.mark.parametrize(
    ("text", "prefix"),
    [
        (ONE + "bogus: 1", "test.yaml: bogus: unknown section"),
        (ONE + "fastagi: {listen: {hots: x}}", "test.yaml: fastagi.listen.hots: unknown key"),
        ("assistants: {x: {vad: {start: 1}}}", "test.yaml: assistants.x.vad.start: unknown key"),
        (
            ONE + "routing: {rules: [{match: {dnis: '1'}, assistant: x}]}",
            "test.yaml: routing.rules[0].match.dnis: unknown key",
        ),
        (
            ONE + "routing: {rules: [{match: {}, assistant: x, priority: 1}]}",
            "test.yaml: routing.rules[0].priority: unknown key",
        ),
        (
            "assistants: {x: {destinations: {op: {context: a, exten: '0', prio: '1'}}}}",
            "test.yaml: assistants.x.destinations.op.prio: unknown key",
        ),
    ],
)
def test_unknown_keys_everywhere(text: str, prefix: str) -> None:
    assert refused(text).startswith(prefix)


def test_error_is_a_value_error_with_source_and_path() -> None:
    with pytest.raises(ValueError) as info:
        parse("assistants: {x: {brain: {foo: 1}}}")
    assert isinstance(info.value, ConfigError)
    assert (info.value.source, info.value.path) == ("test.yaml", "assistants.x.brain.foo")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a\n", "test.yaml: <top>: expected a mapping at the top level"),
        ("", "test.yaml: assistants: at least one assistant is required"),
        ("assistants: [x]", "test.yaml: assistants: expected a mapping of assistant name"),
        (
            ONE + "fastagi: {listen: {port: 70000}}",
            "test.yaml: fastagi.listen.port: expected a TCP",
        ),
        (ONE + "fastagi: {answer: maybe}", "test.yaml: fastagi.answer: expected true or false"),
        (
            ONE + "fastagi: {transfer: blind}",
            "test.yaml: fastagi.transfer: expected auto, goto or redirect, got 'blind'",
        ),
        (ONE + "sidecar: {max_calls: 1.5}", "test.yaml: sidecar.max_calls: expected an integer"),
        (ONE + "routing: {default: y}", "test.yaml: routing.default: unknown assistant 'y'"),
        (
            ONE + "routing: {rules: [{match: {}, assistant: y}]}",
            "test.yaml: routing.rules[0].assistant: unknown assistant 'y'",
        ),
        (ONE + "routing: {rules: [{match: {}}]}", "test.yaml: routing.rules[0]: a rule needs"),
        (
            ONE + "routing: {rules: [{match: {extension: '7(0'}, assistant: x}]}",
            "test.yaml: routing.rules[0].match.extension: not a valid regular expression",
        ),
        ("assistants: {x: {provider: nope}}", "test.yaml: assistants.x.provider: unknown provider"),
        ("assistants: {x: {audio_format: gsm}}", "test.yaml: assistants.x.audio_format: expected"),
        (
            "assistants: {x: {destinations: {op: {context: a}}}}",
            "test.yaml: assistants.x.destinations.op.exten: required key is missing",
        ),
        (
            "assistants: {x: {brain: {dtmf: {'E': {reply: r}}}}}",
            "test.yaml: assistants.x.brain.dtmf.E: expected a DTMF key",
        ),
        (
            "assistants: {x: {brain: {intents: [{name: n, reply: r}]}}}",
            "test.yaml: assistants.x.brain.intents[0]: an intent needs phrases or keywords",
        ),
        (
            "assistants: {x: {brain: {intents: [{name: n, reply: r, keywords: [k],"
            " action: {kind: dance}}]}}}",
            "test.yaml: assistants.x.brain.intents[0].action.kind: expected one of",
        ),
        (
            "assistants: {x: {fallback_destination: op}}",
            "test.yaml: assistants.x.fallback_destination: unknown destination 'op'",
        ),
    ],
)
def test_other_errors(text: str, message: str) -> None:
    assert refused(text).startswith(message)


def test_invalid_yaml_names_the_file() -> None:
    assert refused("a: [").startswith("test.yaml: <top>: not valid YAML")


# -- phone numbers and extensions are strings -----------------------------------------------------


def test_unquoted_leading_zero_extension_is_refused_with_quoting_hint() -> None:
    # YAML 1.1 reads 012 as the octal number 10: the extension would silently become "10".
    message = refused("assistants: {x: {destinations: {op: {context: a, exten: 012}}}}")
    assert message == (
        "test.yaml: assistants.x.destinations.op.exten: expected a quoted string "
        "(got the number 10); quote phone numbers and extensions"
    )


@pytest.mark.parametrize("field", ["dnid", "extension", "callerid"])
def test_unquoted_numbers_in_match_are_refused(field: str) -> None:
    message = refused(ONE + f"routing: {{rules: [{{match: {{{field}: 5551000}}, assistant: x}}]}}")
    assert message.startswith(f"test.yaml: routing.rules[0].match.{field}: expected a quoted")
    assert "quote phone numbers" in message


def test_quoted_extension_and_numeric_priority_are_kept_as_strings() -> None:
    cfg = parse("assistants: {x: {destinations: {op: {context: a, exten: '012', priority: 1}}}}")
    assert cfg.assistants[0].destination("op") == Destination("a", "012", "1")


def test_unquoted_dtmf_keys_become_strings() -> None:
    cfg = parse("assistants: {x: {brain: {dtmf: {1: {reply: one}, '#': {reply: hash}}}}}")
    assert [m.digit for m in cfg.assistants[0].brain.dtmf] == ["1", "#"]


# -- secrets --------------------------------------------------------------------------------------


@pytest.mark.parametrize("secret", ["hunter2", "12345", "'${AMI_SECRET}x'", "'x${AMI_SECRET}'"])
def test_literal_ami_secret_is_refused(secret: str) -> None:
    message = refused(ONE + f"ami: {{host: h, username: u, secret: {secret}}}")
    assert message == (
        "test.yaml: ami.secret: secrets must come from the environment, e.g. ${AMI_SECRET}"
    )


def test_literal_secret_is_refused_before_it_can_appear_in_any_message() -> None:
    message = refused(ONE + "ami: {secret: hunter2, port: nope}")
    assert "hunter2" not in message


def test_secret_from_environment_is_accepted_and_hidden() -> None:
    cfg = parse(ONE + "ami: {host: h, username: u, secret: '${MY_AMI}'}", {"MY_AMI": "pw"})
    assert cfg.ami.secret == "pw"
    assert "pw" not in repr(cfg.ami)


def test_secret_default_is_a_literal_secret_and_is_refused() -> None:
    refused(ONE + "ami: {secret: '${AMI_SECRET:-hunter2}'}")


# -- cross references -----------------------------------------------------------------------------

DESTS = "destinations: {billing: {context: from-internal, exten: '2001'}}"


def with_dtmf_transfer(destination: str) -> str:
    return f"""
assistants:
  x:
    {DESTS}
    brain:
      dtmf:
        "1": {{reply: r, action: {{kind: transfer, destination: {destination}}}}}
"""


def test_transfer_to_undeclared_destination_is_refused_for_intents() -> None:
    text = f"""
assistants:
  x:
    {DESTS}
    brain:
      intents:
        - {{name: s, reply: r, keywords: [sales], action: {{kind: transfer, destination: sales}}}}
"""
    assert refused(text) == (
        "test.yaml: assistants.x.brain.intents[0].action.destination: unknown destination "
        "'sales' (the assistant allows ['billing'])"
    )


def test_transfer_to_undeclared_destination_is_refused_for_dtmf() -> None:
    assert refused(with_dtmf_transfer("sales")).startswith(
        "test.yaml: assistants.x.brain.dtmf.1.action.destination: unknown destination 'sales'"
    )


def test_transfer_to_a_destination_of_another_assistant_is_refused() -> None:
    text = f"""
assistants:
  a: {{{DESTS}}}
  b:
    brain:
      intents: [{{name: n, reply: r, keywords: [k], action: {{kind: transfer, destination: billing}}}}]
"""
    assert refused(text).startswith("test.yaml: assistants.b.brain.intents[0].action.destination")


def test_transfer_to_declared_destination_is_accepted() -> None:
    dtmf = parse(with_dtmf_transfer("billing")).assistants[0].brain.dtmf
    assert dtmf[0].action.destination == "billing"


# -- offer_timeout: a caller never waits a second for a component that is down --------------------


@pytest.mark.parametrize("value", ["1", "1.0", "2.5", "0", "-0.5"])
def test_offer_timeout_outside_zero_to_one_is_refused(value: str) -> None:
    assert refused(ONE + f"fastagi: {{offer_timeout: {value}}}") == (
        "test.yaml: fastagi.offer_timeout: expected seconds above 0 and below 1 "
        "(a caller must never wait longer)"
    )


def test_offer_timeout_below_one_is_accepted() -> None:
    assert parse(ONE + "fastagi: {offer_timeout: 0.99}").fastagi.offer_timeout == 0.99


# -- loader bugs found in review, fixed -------------------------------------------------------


def test_rules_with_query_and_variables_load() -> None:
    cfg = parse(
        ONE + "routing: {rules: [{match: {query: {dept: sales}, variables: {AI_VAR_T: gold}},"
        " assistant: x}]}"
    )
    match = cfg.routing.rules[0].match
    assert (match.query, match.variables) == ((("dept", "sales"),), (("AI_VAR_T", "gold"),))


def test_assistant_body_cannot_rename_the_assistant() -> None:
    assert refused("assistants: {sales: {name: other}}").startswith(
        "test.yaml: assistants.sales.name: unknown key"
    )


def test_dtmf_body_cannot_change_the_digit() -> None:
    refused("assistants: {x: {brain: {dtmf: {'1': {digit: '9', reply: r}}}}}")
