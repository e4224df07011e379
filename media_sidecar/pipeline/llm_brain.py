"""The LLM brain: a streamed chat model answers, sentence by sentence, with tools.

Each caller turn appends the caller's words to a bounded conversation and streams the model's
answer; every complete sentence is released as a :class:`Say` at once (the session speaks it
while the model goes on), so the first sentence is heard long before the answer is finished.

Tools are the speech-to-speech providers' tools (:mod:`media_sidecar.tools`): webhooks run and
their result goes back to the model, which then goes on answering; ``transfer_call`` and
``hangup_call`` are checked by the session and become an :class:`Act` after the announcement
(asked of the model if it called the tool without a word).

History holds what the caller actually heard: the session reports it with :meth:`heard`, and
an answer cut off by barge-in is shortened to its heard part (or dropped if none was heard).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

import trio

from ..brain.base import (
    Act,
    BrainInput,
    BrainOutput,
    NoInputTimeout,
    Say,
    Start,
    TurnInfo,
    UserDtmf,
    UserText,
)
from ..brain.text import SentenceBuffer, split_sentences
from ..config.schema import LlmConfig, RulesBrainConfig
from ..tools.spec import HANGUP, TRANSFER, ToolReply, ToolSpec
from .base import ChatModel, LlmDone, ProviderError, TextDelta, ToolCall

log = logging.getLogger("agi_voice.brain")

ToolRunner = Callable[[str, str | dict[str, Any]], Awaitable[ToolReply]]

CANCELLED = json.dumps({"ok": False, "error": "cancelled: the caller spoke before the tool "
                                         "finished; its outcome is unknown"})
ANNOUNCE = ("Before this happens, say one short sentence to the caller about it (no question). "
            "Do not call a tool.")
MAX_USER_CHARS = 2000
"""Characters of one caller turn kept in the history (its end; about 3 minutes of speech):
with ``history_messages`` this bounds the conversation a call holds in memory."""


class LlmBrain:
    """One call's LLM brain. Implements :class:`~media_sidecar.brain.base.Brain`."""

    def __init__(self, model: ChatModel, cfg: LlmConfig, rules: RulesBrainConfig, *,
                 instructions: str, greeting: str, tools: list[ToolSpec],
                 run_tool: ToolRunner | None = None) -> None:
        self.model = model
        self.cfg = cfg
        self.rules = rules
        self.greeting = greeting or rules.greeting
        self.tools = tools
        self.run_tool = run_tool
        self.system = {"role": "system", "content": instructions}
        self.messages: list[dict[str, Any]] = []
        self._answer: dict[str, Any] | None = None
        """The assistant message of the answer being spoken (content = what was said)."""
        self.requests = 0
        self.usage: dict[str, int] = {}

    # -- the Brain interface -----------------------------------------------------------------

    def heard(self, text: str, complete: bool) -> None:
        msg = self._answer
        if msg is None:
            return
        if not complete:
            msg["content"] = text
            self._answer = None  # later sentences of a cancelled answer are not kept
        if not msg.get("content") and not msg.get("tool_calls") and msg in self.messages:
            self.messages.remove(msg)

    async def respond(self, event: BrainInput, info: TurnInfo) -> AsyncGenerator[BrainOutput, None]:
        match event:
            case Start():
                info.intent = "greeting"
                if self.greeting:
                    self._start_answer()
                    for s in split_sentences(self.greeting):
                        self._said(s)
                        yield Say(s)
                return
            case NoInputTimeout(count=count):
                no_input = self.rules.no_input
                self._start_answer()
                if count <= no_input.max_reprompts:
                    info.intent = "no_input"
                    for s in split_sentences(no_input.reprompt):
                        self._said(s)
                        yield Say(s)
                    return
                action = no_input.action
                info.intent = f"no_input_{action.kind}"
                for s in split_sentences(no_input.hangup_reply):
                    self._said(s)
                    yield Say(s, interruptible=False)
                if action.kind == "transfer":
                    yield Act("transfer", destination=action.destination, reason=action.reason)
                elif action.kind == "hangup":
                    yield Act("hangup", reason=action.reason or "no input")
                return
            case UserText(text=text):
                self._user(text)
            case UserDtmf(digit=digits):
                self._user(f"[The caller pressed the keypad: {' '.join(digits)}]")
            case _:
                raise TypeError(f"LlmBrain cannot answer {type(event).__name__}")
        info.intent = "llm"
        async with aclosing(self._converse(info)) as outs:
            async for out in outs:
                yield out

    # -- the conversation --------------------------------------------------------------------

    def _user(self, text: str) -> None:
        if len(text) > MAX_USER_CHARS:  # a caller's monologue: the model gets its end
            text = "\u2026" + text[-(MAX_USER_CHARS - 1):]
        self.messages.append({"role": "user", "content": text})
        self._trim()

    def _trim(self) -> None:
        """Keep at most ``history_messages``, cutting only before a user message (a tool
        result never loses the call it answers)."""
        limit = max(2, self.cfg.history_messages)
        while len(self.messages) > limit:
            cut = next((i for i, m in enumerate(self.messages[1:], 1) if m["role"] == "user"),
                       None)
            if cut is None:
                break
            del self.messages[:cut]

    def _start_answer(self) -> dict[str, Any]:
        msg: dict[str, Any] = {"role": "assistant", "content": ""}
        self.messages.append(msg)
        self._answer = msg
        return msg

    def _said(self, sentence: str) -> None:
        if self._answer is not None:
            c = self._answer.get("content") or ""
            self._answer["content"] = f"{c} {sentence}".strip()

    async def _converse(self, info: TurnInfo) -> AsyncGenerator[BrainOutput, None]:
        act: Act | None = None
        spoke = False
        for _ in range(max(1, self.cfg.max_tool_rounds)):
            calls: list[ToolCall] = []
            async with aclosing(self._one_request(info, calls, self.tools)) as says:
                async for out in says:
                    spoke = True
                    yield out
            if not calls:
                return
            assert self._answer is not None
            self._answer["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {
                    "name": c.name, "arguments": c.arguments if isinstance(c.arguments, str)
                    else json.dumps(c.arguments)}} for c in calls]
            try:
                for call in calls:
                    reply = await self._run(call)
                    self.messages.append({"role": "tool", "tool_call_id": call.id,
                                          "name": call.name, "content": reply.output})
                    if call.name in (TRANSFER, HANGUP) and act is None and _ok(reply):
                        act = _act(call)
            finally:
                # A turn cancelled while a tool runs (barge-in, the caller speaking again)
                # must not leave a call unanswered: OpenAI answers every later request of the
                # call with HTTP 400 ("An assistant message with 'tool_calls' must be followed
                # by tool messages ..."). Bookkeeping only; the cancellation goes on.
                self._answer_open_calls()
            if act is not None:
                break
        else:
            log.warning("the model kept calling tools; the turn ends without an answer")
            return
        info.intent = act.kind
        if not spoke:
            # the model acted without a word: ask for the announcement, then act
            note = {"role": "system", "content": ANNOUNCE}
            self.messages.append(note)
            try:
                async with aclosing(self._one_request(info, [], [])) as says:
                    async for out in says:
                        yield Say(out.text, interruptible=False)
            finally:
                if note in self.messages:
                    self.messages.remove(note)
        yield act

    def _answer_open_calls(self) -> None:
        """Give every tool call in the history a tool message: a call whose tool never
        answered (its turn was cancelled) gets one saying so, placed with the other answers of
        its assistant message. Chat APIs refuse a history with an unanswered call."""
        i = 0
        while i < len(self.messages):
            msg = self.messages[i]
            i += 1
            calls = msg.get("tool_calls") if msg["role"] == "assistant" else None
            if not calls:
                continue
            answered = set()
            while i < len(self.messages) and self.messages[i]["role"] == "tool":
                answered.add(self.messages[i].get("tool_call_id"))
                i += 1
            for call in calls:
                if call["id"] not in answered:
                    self.messages.insert(i, {
                        "role": "tool", "tool_call_id": call["id"],
                        "name": call["function"]["name"], "content": CANCELLED})
                    i += 1

    async def _one_request(self, info: TurnInfo, calls: list[ToolCall], tools: list[ToolSpec]
                           ) -> AsyncGenerator[Say, None]:
        self._answer_open_calls()  # an invariant of every request, whatever ended a turn
        self._start_answer()
        buf = SentenceBuffer()
        messages = [self.system, *self.messages[:-1]]  # the empty answer is ours, not sent
        self.requests += 1
        info.llm_requests += 1
        t0 = trio.current_time()
        stream = self.model.stream(messages, tools)
        first = None
        with trio.move_on_after(self.cfg.timeout) as waited:  # the first token; then the
            first = await anext(aiter(stream), None)          # HTTP read timeout applies
        if waited.cancelled_caught:
            await stream.aclose()  # type: ignore[attr-defined]
            raise ProviderError(f"the LLM sent nothing within {self.cfg.timeout:g} s",
                                retryable=True)
        events = _prepend(first, stream)
        try:
            async for ev in events:
                if isinstance(ev, TextDelta):
                    if info.first_token is None:
                        info.first_token = trio.current_time()
                    for s in buf.feed(ev.text):
                        if info.first_sentence is None:
                            info.first_sentence = trio.current_time()
                        self._said(s)
                        yield Say(s)
                elif isinstance(ev, ToolCall):
                    if info.first_token is None:
                        info.first_token = trio.current_time()
                    calls.append(ev)
                elif isinstance(ev, LlmDone):
                    for k, v in ev.usage.items():
                        if isinstance(v, int):
                            self.usage[k] = self.usage.get(k, 0) + v
            for s in buf.flush():
                if info.first_sentence is None:
                    info.first_sentence = trio.current_time()
                self._said(s)
                yield Say(s)
        finally:
            await events.aclose()
            info.llm_done = trio.current_time()
            info.llm_ms += (info.llm_done - t0) * 1000

    async def _run(self, call: ToolCall) -> ToolReply:
        if self.run_tool is None:
            return ToolReply.error("tools are not available")
        return await self.run_tool(call.name, call.arguments)


async def _prepend(first: Any, rest: Any) -> AsyncGenerator[Any, None]:
    try:
        if first is not None:
            yield first
        async for x in rest:
            yield x
    finally:
        await rest.aclose()


def _ok(reply: ToolReply) -> bool:
    try:
        data = json.loads(reply.output)
    except ValueError:
        return True
    return not (isinstance(data, dict) and data.get("ok") is False)


def _act(call: ToolCall) -> Act:
    args = call.arguments
    if isinstance(args, str):
        try:
            args = json.loads(args or "{}")
        except ValueError:
            args = {}
    args = args if isinstance(args, dict) else {}
    if call.name == TRANSFER:
        return Act("transfer", destination=str(args.get("destination", "")),
                   reason=str(args.get("reason", "")))
    return Act("hangup", reason=str(args.get("reason", "")) or "assistant ended the call")


class RulesFirstBrain:
    """The rule brain answers what its intents and DTMF mappings cover (fast, predictable,
    free); the LLM answers everything else. The LLM's history holds both, so it knows what
    the rules said. Implements :class:`~media_sidecar.brain.base.Brain`."""

    def __init__(self, rules: Any, llm: LlmBrain) -> None:
        self.rules = rules
        self.llm = llm

    def heard(self, text: str, complete: bool) -> None:
        self.rules.heard(text, complete)
        self.llm.heard(text, complete)

    async def respond(self, event: BrainInput, info: TurnInfo) -> AsyncGenerator[BrainOutput, None]:
        by_rules = False
        if isinstance(event, UserText):
            by_rules = self.rules.match(event.text) is not None
            note = event.text
        elif isinstance(event, UserDtmf):
            by_rules = event.digit in {m.digit for m in self.rules.cfg.dtmf}
            note = f"[The caller pressed the keypad: {event.digit}]"
        if not by_rules:
            async with aclosing(self.llm.respond(event, info)) as outs:
                async for out in outs:
                    yield out
            return
        self.llm._user(note)
        self.llm._start_answer()
        async with aclosing(self.rules.respond(event, info)) as outs:
            async for out in outs:
                if isinstance(out, Say):
                    self.llm._said(out.text)
                yield out
