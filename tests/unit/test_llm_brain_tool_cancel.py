"""The LLM brain's history after a turn is cancelled mid-tool: every tool call answered, in
place, whatever was running (the chat API refuses a history with an unanswered call)."""

from __future__ import annotations

from contextlib import aclosing

import trio

from media_sidecar.brain.base import TurnInfo, UserText
from media_sidecar.config.schema import LlmConfig, RulesBrainConfig
from media_sidecar.pipeline.base import LlmDone, TextDelta, ToolCall
from media_sidecar.pipeline.llm_brain import CANCELLED, LlmBrain
from media_sidecar.tools.spec import ToolReply


class Model:
    name = "scripted"

    def __init__(self, *answers: list) -> None:
        self.answers = list(answers)
        self.seen: list[list[dict]] = []

    async def stream(self, messages, tools):
        self.seen.append([dict(m) for m in messages])
        for ev in self.answers.pop(0):
            yield ev


async def test_the_second_of_two_calls_cancelled_gets_its_answer_after_the_first() -> None:
    model = Model([TextDelta("Checking both."), ToolCall("c1", "lookup", "{}"),
                   ToolCall("c2", "weather", "{}"), LlmDone("tool_calls")],
                  [TextDelta("Sure."), LlmDone()])
    started = trio.Event()

    async def run_tool(name, args):
        if name == "weather":
            started.set()
            await trio.sleep_forever()
        return ToolReply('{"order": "shipped"}')

    brain = LlmBrain(model, LlmConfig(engine="openai"), RulesBrainConfig(),
                     instructions="Be brief.", greeting="", tools=[], run_tool=run_tool)

    async def turn(text: str) -> None:
        async with aclosing(brain.respond(UserText(text), TurnInfo())) as outs:
            async for _ in outs:
                pass

    async with trio.open_nursery() as nursery:
        nursery.start_soon(turn, "order and weather?")
        await started.wait()
        nursery.cancel_scope.cancel()
    brain.heard("Checking both.", complete=True)
    assert [(m["role"], m.get("tool_call_id")) for m in brain.messages] == [
        ("user", None), ("assistant", None), ("tool", "c1"), ("tool", "c2")]
    assert brain.messages[-1]["content"] == CANCELLED

    await turn("never mind")
    sent = model.seen[-1]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool", "tool", "user"]
    assert sent[3]["content"] == '{"order": "shipped"}'


async def test_a_history_broken_any_other_way_is_repaired_before_the_next_request() -> None:
    model = Model([TextDelta("Fine."), LlmDone()])
    brain = LlmBrain(model, LlmConfig(engine="openai"), RulesBrainConfig(),
                     instructions="Be brief.", greeting="", tools=[])
    brain.messages = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "x", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "user", "content": "b"}]
    async with aclosing(brain.respond(UserText("c"), TurnInfo())) as outs:
        assert [o.text async for o in outs] == ["Fine."]  # type: ignore[union-attr]
    assert [m["role"] for m in model.seen[0]] == ["system", "user", "assistant", "tool", "user",
                                                  "user"]
    assert model.seen[0][3] == {"role": "tool", "tool_call_id": "x", "name": "f",
                                "content": CANCELLED}
