"""Regression: a turn cancelled while a webhook tool runs (barge-in, the caller speaking again)
left an assistant message with ``tool_calls`` and no tool answer in the history, and OpenAI
answered every later request of the call with HTTP 400. The chat mock refuses such a history
with the API's own 400, so the follow-up request proves the history is whole again."""

from __future__ import annotations

from contextlib import aclosing

import pytest
import trio

from media_sidecar.brain.base import TurnInfo, UserText
from media_sidecar.config.schema import LlmConfig, RulesBrainConfig
from media_sidecar.pipeline.llm_brain import CANCELLED, LlmBrain
from media_sidecar.pipeline.llm_openai import OpenAIChat
from media_sidecar.tools.spec import ToolReply, ToolSpec
from tests.mocks.openai_chat import ChatScript, MockChatServer, Reply, ToolCall
from tests.session.pipeline import KEYS, pipeline_net

LOOKUP = ToolSpec("lookup_order", "Look an order up.", {
    "type": "object", "properties": {"order": {"type": "string"}}, "required": ["order"]})
SCRIPT = ChatScript(replies={
    "where is my order": Reply("Let me check.", tool_calls=(
        ToolCall("lookup_order", {"order": "42"}),)),
    "never mind": Reply("Sure, what else can I do?")},
    first_token_delay=0.2, token_delay=0.02)


async def turn(brain: LlmBrain, text: str) -> list[str]:
    async with aclosing(brain.respond(UserText(text), TurnInfo())) as outs:
        return [o.text async for o in outs]  # type: ignore[union-attr]


@pytest.mark.parametrize("calls_first", [0, 1])
async def test_a_tool_cancelled_by_the_caller_is_answered_before_the_next_request(
        autojump_clock, calls_first: int) -> None:
    chat = MockChatServer(script=SCRIPT)
    started = trio.Event()
    ran: list[str] = []

    async def run_tool(name: str, args: object) -> ToolReply:
        ran.append(name)
        if len(ran) > calls_first:
            started.set()
            await trio.sleep_forever()  # the webhook is slow; the caller speaks meanwhile
        return ToolReply('{"ok": true, "status": "shipped"}')

    async with pipeline_net({"api.openai.com": chat}) as net:
        model = OpenAIChat(LlmConfig(engine="openai", model="gpt-4.1-mini"), KEYS, net)
        brain = LlmBrain(model, LlmConfig(engine="openai"), RulesBrainConfig(),
                         instructions="Be brief.", greeting="", tools=[LOOKUP],
                         run_tool=run_tool)
        if calls_first:  # a first, answered round of the same tool earlier in the call
            assert await turn(brain, "where is my order") == ["Let me check.", "done"]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(turn, brain, "where is my order")
            await started.wait()
            nursery.cancel_scope.cancel()  # barge-in: the turn is cancelled mid-tool
        assert await turn(brain, "never mind") == ["Sure, what else can I do?"]

    follow_up = chat.chats[-1]
    assert follow_up.status == 200 and follow_up.problems == []
    calls = [m for m in follow_up.messages if m.get("tool_calls")]
    answers = [m for m in follow_up.messages if m["role"] == "tool"]
    assert len(answers) == len(calls) == 1 + calls_first
    assert answers[-1] == {"role": "tool", "tool_call_id": calls[-1]["tool_calls"][0]["id"],
                           "content": CANCELLED}  # no "name": not in OpenAI's tool message
    assert follow_up.messages[-1] == {"role": "user", "content": "never mind"}


async def test_the_mock_refuses_an_unanswered_tool_call_with_the_api_400(autojump_clock):
    """What the fix prevents, as the API (and the mock) answer it."""
    chat = MockChatServer(script=SCRIPT)
    async with pipeline_net({"api.openai.com": chat}) as net:
        model = OpenAIChat(LlmConfig(engine="openai"), KEYS, net)
        history = [{"role": "user", "content": "where is my order"},
                   {"role": "assistant", "content": "Let me check.", "tool_calls": [
                       {"id": "call_1", "type": "function",
                        "function": {"name": "lookup_order", "arguments": "{}"}}]},
                   {"role": "user", "content": "never mind"}]
        with pytest.raises(Exception, match="400"):
            async with aclosing(model.stream(history, [LOOKUP])) as events:
                async for _ in events:
                    pass
    (log,) = chat.chats
    assert log.status == 400 and log.error is not None
    assert log.error.startswith("An assistant message with 'tool_calls' must be followed by "
                                "tool messages responding to each 'tool_call_id'.")
    log.problems.clear()  # provoked on purpose; the suite fails on any other
