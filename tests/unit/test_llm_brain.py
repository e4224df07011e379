"""The LLM brain on a scripted chat model (the model is the stand-in; the brain is under test):
sentences as they complete, bounded history, heard-only answers, tools, the announcement."""

from __future__ import annotations

from contextlib import aclosing

import pytest

from media_sidecar.brain.base import Act, Say, Start, TurnInfo, UserText
from media_sidecar.config.schema import LlmConfig, RulesBrainConfig
from media_sidecar.pipeline.base import LlmDone, ProviderError, TextDelta, ToolCall
from media_sidecar.pipeline.llm_brain import LlmBrain
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


def words(text: str) -> list:
    parts = text.split(" ")
    return [TextDelta(p if i == 0 else " " + p) for i, p in enumerate(parts)] + [LlmDone()]


def brain(model, **llm) -> LlmBrain:
    async def run_tool(name, args):
        return ToolReply('{"ok": true}') if name != "lookup" else ToolReply('{"order": "shipped"}')

    return LlmBrain(model, LlmConfig(engine="openai", **llm), RulesBrainConfig(),
                    instructions="Be brief.", greeting="Hi there.", tools=[],
                    run_tool=run_tool)


async def answer(b: LlmBrain, event) -> list:
    async with aclosing(b.respond(event, TurnInfo())) as outs:
        return [o async for o in outs]


async def test_sentences_are_released_one_by_one_and_history_is_heard_text() -> None:
    b = brain(Model(words("We open at nine. We close at five.")))
    assert await answer(b, Start()) == [Say("Hi there.")]
    out = await answer(b, UserText("hours?"))
    assert out == [Say("We open at nine."), Say("We close at five.")]
    b.heard("We open at", complete=False)
    assert b.messages == [{"role": "assistant", "content": "Hi there."},
                          {"role": "user", "content": "hours?"},
                          {"role": "assistant", "content": "We open at"}]


async def test_an_answer_nobody_heard_leaves_no_trace() -> None:
    b = brain(Model(words("Let me check.")))
    await answer(b, UserText("hello"))
    b.heard("", complete=False)
    assert b.messages == [{"role": "user", "content": "hello"}]


async def test_history_is_bounded_and_cut_before_a_user_message() -> None:
    model = Model(*[words(f"Answer {i}.") for i in range(6)])
    b = brain(model, history_messages=4)
    for i in range(6):
        await answer(b, UserText(f"q{i}"))
    assert [m["role"] for m in b.messages] == ["user", "assistant", "user", "assistant"]
    assert b.messages[0]["content"] == "q4"
    assert model.seen[-1][0] == {"role": "system", "content": "Be brief."}


async def test_a_webhook_result_goes_back_and_the_model_goes_on() -> None:
    model = Model([ToolCall("c1", "lookup", '{"order": "7"}'), LlmDone("tool_calls")],
                  words("Your order has shipped."))
    b = brain(model)
    assert await answer(b, UserText("where is order 7")) == [Say("Your order has shipped.")]
    second = model.seen[1]
    assert second[-2]["tool_calls"][0]["function"] == {"name": "lookup",
                                                       "arguments": '{"order": "7"}'}
    assert second[-1] == {"role": "tool", "tool_call_id": "c1", "name": "lookup",
                          "content": '{"order": "shipped"}'}


async def test_a_silent_transfer_asks_for_the_announcement_then_acts() -> None:
    model = Model([ToolCall("c1", "transfer_call", {"destination": "sales"}), LlmDone()],
                  words("Putting you through to sales."))
    out = await answer(brain(model), UserText("sales"))
    assert out == [Say("Putting you through to sales.", interruptible=False),
                   Act("transfer", destination="sales")]
    assert model.seen[1][-1]["role"] == "system"  # the one-off request for the sentence


async def test_no_first_token_within_the_timeout_is_a_provider_error(autojump_clock) -> None:
    import trio

    class Slow:
        name = "slow"

        async def stream(self, messages, tools):
            await trio.sleep(60)
            yield TextDelta("late")

    with pytest.raises(ProviderError, match="within 3 s"):
        await answer(brain(Slow(), timeout=3), UserText("hi"))
