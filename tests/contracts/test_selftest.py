"""The contract checker catches what it must: unknown keys, wrong literals, missing required keys,
wrong JSON kinds, at any depth, on every wire; and lets through what the vendor documents."""

from __future__ import annotations

from typing import Any

import pytest

from tests.contracts.vendor import check_form_fields, check_messages, check_query

GOOD: dict[str, dict[str, Any]] = {
    "openai_realtime": {"type": "session.update", "session": {
        "type": "realtime", "audio": {"input": {"format": {"type": "audio/pcmu"},
                                                "transcription": {"model": "gpt-transcribe",
                                                                  "language": "en"}}}}},
    "openai_chat": {"model": "gpt-5-mini", "stream": True, "messages": [
        {"role": "user", "content": "hi"}], "max_completion_tokens": 200},
    "openai_speech": {"model": "gpt-4o-mini-tts", "input": "Hello", "voice": "marin",
                      "response_format": "pcm"},
    "deepgram_listen": {"type": "Finalize"},
    "deepgram_speak": {"type": "Speak", "text": "Hello"},
    "deepgram_agent": {"type": "InjectAgentMessage", "message": "One moment."},
}


@pytest.mark.parametrize("wire", sorted(GOOD))
def test_a_documented_client_message_passes(wire: str) -> None:
    assert check_messages(wire, [GOOD[wire]], sent_by="client") == []


@pytest.mark.parametrize(("wire", "bad", "expected"), [
    ("openai_realtime", {"type": "session.update", "session": {
        "type": "realtime", "audio": {"input": {"format": {"type": "audio/pcmu", "rate": 8000}}}}},
     "$.session.audio.input.format: unknown key 'rate'"),
    ("openai_realtime", {"type": "session.update", "session": {"type": "realtime",
                                                                "voice": "marin"}},
     "$.session: unknown key 'voice'"),
    ("openai_realtime", {"type": "response.cancel", "response_id": 5},
     "$.response_id: 5 is not a str"),
    ("openai_realtime", {"type": "conversation.item.truncate", "item_id": "i",
                         "content_index": 0},
     "missing required key 'audio_end_ms'"),
    ("openai_realtime", {"type": "session.update", "session": {
        "type": "realtime", "reasoning": {"effort": "maximal"}}},
     "$.session.reasoning.effort: 'maximal' is not one of"),
    ("openai_chat", {"model": "m", "messages": [{"role": "robot", "content": "x"}]},
     "$.messages[0]"),
    ("openai_chat", {"model": "m", "messages": [], "max_token": 5}, "unknown key 'max_token'"),
    ("openai_speech", {"model": "tts-1", "input": "x", "voice": "marin",
                       "response_format": "ulaw"}, "$.response_format: 'ulaw' is not one of"),
    ("deepgram_listen", {"type": "Finalise"}, "'Finalise' is not one of"),
    ("deepgram_speak", {"type": "Speak", "text": "x", "voice": "asteria"},
     "unknown key 'voice'"),
    ("deepgram_speak", {"type": "Speak"}, "missing required key 'text'"),
    ("deepgram_agent", {"type": "InjectAgentMessage", "content": "x"}, "unknown key 'content'"),
])
def test_a_wrong_client_message_is_caught(wire: str, bad: dict, expected: str) -> None:
    problems = check_messages(wire, [bad], sent_by="client")
    assert any(expected in p for p in problems), problems


def test_server_events_are_checked_too() -> None:
    good = {"type": "input_audio_buffer.speech_started", "event_id": "e1", "item_id": "i1",
            "audio_start_ms": 100}
    assert check_messages("openai_realtime", [good], sent_by="server") == []
    bad = {**good, "audio_start_ms": "100", "extra": 1}
    problems = check_messages("openai_realtime", [bad], sent_by="server")
    assert len(problems) == 2, problems
    assert check_messages("deepgram_speak", [{"type": "Flushed", "sequence_id": "0"}],
                          sent_by="server")


def test_query_and_form_fields() -> None:
    assert check_query("listen", ["model", "encoding", "sample_rate", "interim_results"]) == []
    assert check_query("listen", ["modle"]) == [
        "query: unknown parameter 'modle' (deepgram listen)"]
    assert check_form_fields({"model": "gpt-transcribe", "response_format": "json",
                              "include[]": "logprobs", "language": "en"}) == []
    assert check_form_fields({"model": "gpt-transcribe", "response_format": "jsonl",
                              "lang": "en"}) == [
        "form.response_format: 'jsonl' is not one of "
        "['diarized_json', 'json', 'srt', 'text', 'verbose_json', 'vtt']",
        "form: unknown field 'lang' (not in TranscriptionCreateParams)"]


def test_the_suite_fixture_fails_on_a_mock_problem_an_error_event_or_a_contract_breach() -> None:
    """What tests/conftest.py reports at a session or e2e test's teardown."""
    from tests.conftest import mock_failures
    from tests.mocks.openai_realtime import SessionLog

    log = SessionLog()
    assert mock_failures([log]) == []
    log.problems.append("function_call_output for unknown call_id 'call_nope'")
    log.server_events.append({"type": "error", "event_id": "e1", "error": {
        "type": "invalid_request_error", "code": "unknown_parameter",
        "message": "Unknown parameter: 'session.voice'.", "param": "session.voice",
        "event_id": None}})
    log.client_events.append({"type": "response.create", "response": {"voice": 1}})
    failures = mock_failures([log])
    assert failures[0] == "openai_realtime: function_call_output for unknown call_id 'call_nope'"
    assert ("openai_realtime client message 0 (response.create): $.response: unknown key "
            "'voice' (not in RealtimeResponseCreateParamsParam)") in failures
    assert failures[-1].startswith("openai_realtime: error event {'type': 'invalid_request_error'")
    log.problems.clear()  # this test's own fixture checks the log too
    log.server_events.clear()
    log.client_events.clear()
