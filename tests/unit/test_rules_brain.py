"""The rule brain with the embedded default assistant: intents, DTMF, no-input, farewells."""

from __future__ import annotations

import pytest

from media_sidecar.brain.base import (
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
from media_sidecar.brain.rules import INVALID_KEY_REPLY, Heard, RulesBrain, normalise
from media_sidecar.brain.text import SentenceBuffer, split_sentences
from media_sidecar.config.loader import load_config
from media_sidecar.config.schema import Action, DtmfMapping, Intent, RulesBrainConfig


@pytest.fixture(scope="module")
def cfg() -> RulesBrainConfig:
    assistant = load_config().assistant("receptionist")
    assert assistant is not None
    return assistant.brain


async def answer(brain: RulesBrain, event: BrainInput) -> tuple[list[BrainOutput], TurnInfo]:
    info = TurnInfo()
    return [out async for out in brain.respond(event, info)], info


async def test_greeting_is_said_sentence_by_sentence_and_interruptible(
    cfg: RulesBrainConfig,
) -> None:
    outs, info = await answer(RulesBrain(cfg), Start())
    assert outs == [
        Say("Hello, thanks for calling."),
        Say("You can ask for billing, sales or support, or press 1 for sales and 2 for billing."),
    ]
    assert all(isinstance(o, Say) and o.interruptible for o in outs)
    assert info.intent == "greeting"


@pytest.mark.parametrize(
    ("text", "intent", "matched", "destination"),
    [
        ("Please transfer me to the billing department.", "billing", "billing", "billing"),
        ("I have a question about my INVOICES!", "billing", "invoice", "billing"),
        ("I'd like to buy something", "sales", "buy", "sales"),
        ("The help-desk, please", "support", "help desk", "support"),
        ("can I talk to a human", "operator", "human", "operator"),
    ],
)
async def test_transfer_intents(
    cfg: RulesBrainConfig, text: str, intent: str, matched: str, destination: str
) -> None:
    outs, info = await answer(RulesBrain(cfg), UserText(text))
    assert info.intent == intent and info.matched == [matched]
    *says, act = outs
    assert act == Act("transfer", destination=destination)
    assert says and all(isinstance(s, Say) for s in says)
    # The transfer is decided: announcing it must not be cut (that would cancel the transfer).
    assert all(isinstance(s, Say) and not s.interruptible for s in says)


async def test_goodbye_farewell_is_not_interruptible_and_hangs_up(cfg: RulesBrainConfig) -> None:
    outs, info = await answer(RulesBrain(cfg), UserText("OK, that's all. Bye!"))
    assert info.intent == "goodbye"
    assert outs == [
        Say("Thank you for calling.", interruptible=False),
        Say("Goodbye!", interruptible=False),
        Act("hangup", reason="caller said goodbye"),
    ]


async def test_an_intent_without_action_only_talks(cfg: RulesBrainConfig) -> None:
    outs, info = await answer(RulesBrain(cfg), UserText("What are your opening hours?"))
    assert info.intent == "hours"
    assert outs == [
        Say("We're open Monday to Friday, nine to five."),
        Say("Is there anything else?"),
    ]


@pytest.mark.parametrize("text", ["blah blah", "", "   ", "?!", "I'd like a pizza",
                                  "what's the weather like", "um uh"])
async def test_no_match_gives_the_fallback(cfg: RulesBrainConfig, text: str) -> None:
    outs, info = await answer(RulesBrain(cfg), UserText(text))
    assert info.intent == "fallback" and info.matched == []
    assert outs == [Say(s) for s in split_sentences(cfg.fallback)]
    assert not any(isinstance(o, Act) for o in outs)


async def test_intents_are_tried_in_order_for_keywords() -> None:
    brain = RulesBrain(
        RulesBrainConfig(
            intents=(
                Intent("first", "One.", keywords=("bill",)),
                Intent("second", "Two.", keywords=("bill", "sales")),
            )
        )
    )
    _, info = await answer(brain, UserText("sales and bill"))
    assert info.intent == "first"


async def test_a_phrase_in_a_later_intent_beats_a_keyword_in_an_earlier_one() -> None:
    brain = RulesBrain(
        RulesBrainConfig(
            intents=(
                Intent("billing", "Billing.", keywords=("billing",)),
                Intent("complaint", "Sorry.", phrases=("wrong billing",)),
            )
        )
    )
    _, info = await answer(brain, UserText("There's a WRONG billing amount"))
    assert (info.intent, info.matched) == ("complaint", ["wrong billing"])
    _, info = await answer(brain, UserText("billing please"))
    assert info.intent == "billing"


async def test_phrases_match_as_substrings() -> None:
    brain = RulesBrain(RulesBrainConfig(intents=(Intent("x", "X.", phrases=("cancel my",)),)))
    _, info = await answer(brain, UserText("I want to cancel my subscription"))
    assert info.intent == "x"


@pytest.mark.parametrize(
    ("digit", "reply", "act"),
    [
        ("1", "Transferring you to sales.", Act("transfer", destination="sales")),
        ("2", "Transferring you to billing.", Act("transfer", destination="billing")),
        ("0", "Transferring you to the operator.", Act("transfer", destination="operator")),
        ("#", "Goodbye!", Act("hangup", reason="caller pressed hash")),
    ],
)
async def test_dtmf_menu(cfg: RulesBrainConfig, digit: str, reply: str, act: Act) -> None:
    outs, info = await answer(RulesBrain(cfg), UserDtmf(digit))
    assert outs == [Say(reply, interruptible=False), act]
    assert (info.intent, info.matched) == ("dtmf", [digit])


async def test_an_unmapped_key_is_refused_politely(cfg: RulesBrainConfig) -> None:
    outs, info = await answer(RulesBrain(cfg), UserDtmf("7"))
    assert outs == [Say(INVALID_KEY_REPLY)]
    assert (info.intent, info.matched) == ("dtmf_invalid", ["7"])


async def test_a_key_mapped_to_an_action_without_reply_acts_at_once() -> None:
    mapping = DtmfMapping("9", reply="", action=Action("transfer", destination="operator"))
    outs, _ = await answer(RulesBrain(RulesBrainConfig(dtmf=(mapping,))), UserDtmf("9"))
    assert outs == [Act("transfer", destination="operator")]


async def test_no_input_reprompts_then_passes_the_caller_to_a_person(
    cfg: RulesBrainConfig,
) -> None:
    """The embedded default never hangs up on a silent caller: a person may hear them."""
    brain = RulesBrain(cfg)
    reprompt = [Say(s) for s in split_sentences(cfg.no_input.reprompt)]
    assert cfg.no_input.max_reprompts == 2
    for count in (1, 2):
        outs, info = await answer(brain, NoInputTimeout(count))
        assert outs == reprompt and info.intent == "no_input"
    outs, info = await answer(brain, NoInputTimeout(3))
    assert info.intent == "no_input_transfer"
    assert outs == [
        Say("I can't hear you, so I'll put you through to a person.", interruptible=False),
        Act("transfer", destination="operator", reason="no input"),
    ]


async def test_no_input_hangs_up_when_configured_so() -> None:
    brain = RulesBrain(RulesBrainConfig())
    outs, info = await answer(brain, NoInputTimeout(3))
    assert info.intent == "no_input_hangup"
    assert outs == [
        Say("I haven't heard anything, so I'll end the call now.", interruptible=False),
        Say("Goodbye.", interruptible=False),
        Act("hangup", reason="no input"),
    ]


async def test_heard_keeps_a_short_history(cfg: RulesBrainConfig) -> None:
    brain = RulesBrain(cfg)
    brain.heard("Hello, thanks for calling.", True)
    brain.heard("You can ask", False)
    assert brain.history == [Heard("Hello, thanks for calling.", True), Heard("You can ask", False)]
    for i in range(50):
        brain.heard(str(i), True)
    assert len(brain.history) == 20 and brain.history[-1] == Heard("49", True)


async def test_unknown_input_is_a_type_error(cfg: RulesBrainConfig) -> None:
    with pytest.raises(TypeError, match="cannot answer"):
        await answer(RulesBrain(cfg), "hello")  # type: ignore[arg-type]


def test_normalise() -> None:
    assert normalise("  That’s ALL, thanks!! ") == "thats all thanks"
    assert normalise("help-desk_now") == "help desk now"
    assert normalise("") == ""


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("One. Two! Three?", ["One.", "Two!", "Three?"]),
        ("Dr. Smith costs 3.5 dollars. OK", ["Dr. Smith costs 3.5 dollars.", "OK"]),
        ('He said "Yes." Then left', ['He said "Yes."', "Then left"]),
        ("Wait... what? No.", ["Wait... what?", "No."]),
        ("line one\nline two", ["line one", "line two"]),
        ("", []),
        ("  ", []),
    ],
)
def test_split_sentences(text: str, sentences: list[str]) -> None:
    assert split_sentences(text) == sentences


def test_sentence_buffer_releases_sentences_as_they_complete() -> None:
    buf = SentenceBuffer()
    pieces = ["Hel", "lo.", " ", "Dr", ". Who", " is it? I", "t is 3.", "5 now."]
    released = [buf.feed(p) for p in pieces]
    assert released == [[], [], [], ["Hello."], [], ["Dr. Who is it?"], [], []]
    assert buf.flush() == ["It is 3.5 now."]
    assert buf.flush() == []
