"""Understanding the caller: match tokens and spelled numbers, fuzzy and phonetic matching with
its guards, the misheard phrasings callers reported, spoken menu keys and extensions, the
misunderstanding count, the STT re-scoring, and vocabulary biasing for Deepgram."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from media_sidecar.brain.base import Act, NoInputTimeout, Say, TurnInfo, UserDtmf, UserText
from media_sidecar.brain.fuzzy import Term, phonetic_key, phonetic_keys, similarity
from media_sidecar.brain.rules import RulesBrain
from media_sidecar.brain.text import words
from media_sidecar.brain.vocabulary import Rescorer, default_keyterms, vocabulary_words
from media_sidecar.config.loader import ConfigError, load_config, parse_config
from media_sidecar.config.schema import Intent, NotUnderstood, RulesBrainConfig
from media_sidecar.pipeline.stt_deepgram import DeepgramListen
from media_sidecar.session.records import CallRecord, TurnRecord, without_text

DEFAULT = load_config().assistants[0]


def brain() -> RulesBrain:
    return RulesBrain(DEFAULT.brain, DEFAULT.destinations)


async def answer(b: RulesBrain, event) -> tuple[list, TurnInfo]:
    info = TurnInfo()
    return [o async for o in b.respond(event, info)], info


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("extension two oh one", ["extension", "201"]),
        ("Extension two oh oh three, please", ["extension", "2003", "please"]),
        ("one two three", ["123"]),
        ("1-2-3", ["123"]),
        ("ext2001", ["ext", "2001"]),
        ("two thousand and one", ["2001"]),
        ("twenty one", ["21"]),
        ("double three", ["33"]),
        ("Um, uh, I'd like sales... er, please", ["id", "like", "sales", "please"]),
        ("Oh, billing", ["oh", "billing"]),
        ("salt and pepper", ["salt", "and", "pepper"]),
    ],
)
def test_match_tokens(text: str, tokens: list[str]) -> None:
    assert words(text) == tokens


def test_sound_keys_collapse_what_a_phone_line_confuses() -> None:
    assert {phonetic_key(w) for w in ("sales", "sails", "cells", "thales", "fails")} == {"SLS"}
    assert phonetic_key("please") == phonetic_key("police")
    assert phonetic_keys("villain")[1] == "PLN" and phonetic_keys("billing")[1] == "PLNK"


@pytest.mark.parametrize(
    ("heard", "term", "low", "high"),
    [
        ("thales", "sales", 0.8, 0.9),
        ("sails", "sales", 0.85, 0.95),
        ("invoices", "invoice", 1.0, 1.0),  # a plural is the word
        ("pizza", "sales", 0.0, 0.5),
        ("by", "buy", 0.0, 0.0),  # a function word never fuzzy-matches
        ("bye", "buy", 0.0, 0.0),  # a term under four letters matches only exactly
        ("2003", "2001", 0.0, 0.0),  # digits only exactly
        ("yours", "hours", 0.0, 0.0),
    ],
)
def test_similarity_and_its_guards(heard: str, term: str, low: float, high: float) -> None:
    assert low <= similarity(heard, term) <= high


def test_a_term_finds_split_and_joined_words() -> None:
    help_desk = Term("help desk", ("help", "desk"))
    hit = help_desk.find(words("the helpdesk please"), 1.0)
    assert hit is not None and hit.exact and hit.heard == "helpdesk"
    billing = Term("billing", ("billing",))
    hit = billing.find(words("the bill ing team"), 0.8)
    assert hit is not None and hit.heard == "bill ing"


@pytest.mark.parametrize(
    ("text", "intent", "term", "how"),
    [
        ("Thales, please.", "sales", "sales", "fuzzy"),
        ("sails please", "sales", "sales", "fuzzy"),
        ("Police transfer me to billing.", "billing", "billing", "keyword"),
        ("uh, I'd like, um, billing", "billing", "billing", "keyword"),
        ("Billing!", "billing", "billing", "keyword"),
        ("bill ing", "billing", "billing", "keyword"),  # "bill" is a billing keyword too
        ("operator", "operator", "operator", "keyword"),
        ("The operater, please", "operator", "operator", "fuzzy"),
        ("Can I speak to a persons", "operator", "person", "keyword"),
        ("I need tech nical support", "support", "support", "keyword"),
        ("What are your opening ours?", "hours", "opening", "keyword"),
        ("I have a question about my invoyce", "billing", "invoice", "fuzzy"),
        ("Fails, please.", "sales", "sales", "fuzzy"),  # f for s: the band hides the hiss
        ("Sail, please.", "sales", "sales", "fuzzy"),  # the singular of a plural term
        ("Can I get the help best?", "support", "help", "keyword"),
    ],
)
def test_misheard_and_hesitant_phrasings_reach_their_intents(text, intent, term, how) -> None:
    m = brain().match(text)
    assert m is not None and m.intent is not None
    assert (m.intent.name, m.term, m.how) == (intent, term, how)
    assert 0.8 <= m.score <= 1.0


@pytest.mark.parametrize("text", ["I'd like a pizza", "what's the weather like",
                                  "my name is Ada", "um", "press star",
                                  "a problem with my value", "I'm a woman", "option 7"])
def test_unrelated_speech_matches_nothing(text: str) -> None:
    b = brain()
    assert b.match(text) is None and b.spoken_key(text) is None and b.extension(text) is None


@pytest.mark.parametrize("text", ["Don't buy.",  # how the STT heard one caller's "Goodbye."
                                  "Not sales.", "Not billing!"])
def test_a_term_right_after_a_negation_does_not_count(text: str) -> None:
    assert brain().match(text) is None


@pytest.mark.parametrize("text,intent", [
    ("Not sales, billing please", "billing"),
    ("I didn't get my invoice", "billing"),  # only the word right before negates
    ("I can't pay my bill", "billing"),
    ("No, sales please.", "sales"),  # "no" is an answer, not a negation
])
def test_what_is_not_negated_still_matches(text: str, intent: str) -> None:
    m = brain().match(text)
    assert m is not None and m.intent is not None and m.intent.name == intent, m


async def test_the_record_gets_the_match_and_its_score() -> None:
    outs, info = await answer(brain(), UserText("Thales, please."))
    assert info.intent == "sales" and info.matched == ["sales"]
    assert info.match == {"term": "sales", "heard": "thales", "score": 0.864, "how": "fuzzy"}
    assert outs[-1] == Act("transfer", destination="sales")


async def test_exact_hits_beat_closer_sounding_ones() -> None:
    b = RulesBrain(RulesBrainConfig(intents=(
        Intent("sales", "S.", keywords=("sales",)),
        Intent("tales", "T.", keywords=("tales",)),
    )))
    _, info = await answer(b, UserText("tales"))
    assert info.intent == "tales" and info.match["how"] == "keyword"


async def test_min_confidence_one_means_exact_matches_only() -> None:
    cfg = RulesBrainConfig(intents=(Intent("sales", "S.", keywords=("sales",)),),
                           min_confidence=1.0)
    _, info = await answer(RulesBrain(cfg), UserText("Thales, please"))
    assert info.intent == "fallback"


@pytest.mark.parametrize(("text", "reply", "act"), [
    ("one", "Transferring you to sales.", Act("transfer", destination="sales")),
    ("Option two, please.", "Transferring you to billing.",
     Act("transfer", destination="billing")),
    ("I'll press zero", "Transferring you to the operator.",
     Act("transfer", destination="operator")),
    ("Option two, gleam.", "Transferring you to billing.",  # "please" misheard
     Act("transfer", destination="billing")),
])
async def test_a_menu_key_said_aloud_works_like_the_key(text, reply, act) -> None:
    outs, info = await answer(brain(), UserText(text))
    assert outs == [Say(reply, interruptible=False), act]
    assert info.intent == "dtmf" and info.match["how"] == "spoken_key"


async def test_an_extension_said_aloud_reaches_its_destination() -> None:
    outs, info = await answer(brain(), UserText("Extension two oh oh three, please."))
    assert outs == [Say("Transferring you to technical support.", interruptible=False),
                    Act("transfer", destination="support")]
    assert info.intent == "extension" and info.match["heard"] == "extension 2003"
    _, info = await answer(brain(), UserText("extension 4711"))  # not a destination
    assert info.intent == "fallback"
    # "to" and "for" are digits right after "extension" only (Moonshine writes "to O O")
    _, info = await answer(brain(), UserText("Extension to O O three, please."))
    assert info.intent == "extension" and info.match["heard"] == "extension 2003"
    m = brain().match("I want to talk to one person")
    assert m is not None and m.intent is not None and m.intent.name == "operator"


async def test_misunderstandings_in_a_row_end_with_a_person() -> None:
    b = brain()
    fallback = [Say(s) for s in ("Sorry, I can put you through to billing, sales or support.",
                                 "Which would you like?")]
    outs, info = await answer(b, UserText("blah blah"))
    assert outs == fallback and info.intent == "fallback"
    # silence in between is not a misunderstanding, and does not reset the count
    _, info = await answer(b, NoInputTimeout(1))
    assert info.intent == "no_input" and b.misunderstood == 1
    outs, info = await answer(b, UserText("I'd like a pizza"))
    assert info.intent == "not_understood_transfer"
    assert outs == [
        Say("Sorry, I'm having trouble understanding.", interruptible=False),
        Say("Let me get you a person.", interruptible=False),
        Act("transfer", destination="operator", reason="caller not understood"),
    ]


async def test_an_understood_request_or_a_key_resets_the_count() -> None:
    b = brain()
    await answer(b, UserText("blah"))
    await answer(b, UserText("what are your opening hours"))
    _, info = await answer(b, UserText("blah"))
    assert info.intent == "fallback"
    await answer(b, UserDtmf("7"))  # an invalid key is no understanding either
    _, info = await answer(b, UserText("blah"))
    assert info.intent == "not_understood_transfer"


async def test_without_a_destination_the_fallback_repeats() -> None:
    b = RulesBrain(RulesBrainConfig(not_understood=NotUnderstood(after=2, destination="")))
    for _ in range(4):
        _, info = await answer(b, UserText("blah"))
        assert info.intent == "fallback"


def test_misunderstood_callers_go_to_the_fallback_destination_unless_told() -> None:
    assert DEFAULT.brain.not_understood.destination == "operator"
    cfg = parse_config("""
assistants:
  x:
    destinations: {op: {context: c, exten: "0"}, desk: {context: c, exten: "1"}}
    fallback_destination: op
    brain: {not_understood: {destination: desk}}
  y:
    destinations: {op: {context: c, exten: "0"}}
""", "t.yaml")
    assert [a.brain.not_understood.destination for a in cfg.assistants] == ["desk", ""]


@pytest.mark.parametrize(("yaml", "message"), [
    ("brain: {not_understood: {destination: nowhere}}",
     "t.yaml: assistants.x.brain.not_understood.destination: unknown destination 'nowhere'"),
    ("brain: {no_input: {action: {kind: transfer, destination: nowhere}}}",
     "t.yaml: assistants.x.brain.no_input.action.destination: unknown destination"),
    ("brain: {min_confidence: 0.2}", "t.yaml: assistants.x.brain.min_confidence: expected"),
    ("filler: {after: 30}", "t.yaml: assistants.x.filler.after: expected 0..10 s"),
])
def test_understanding_settings_are_validated(yaml: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(f"assistants:\n  x: {{{yaml}}}\n", "t.yaml")
    assert str(err.value).startswith(message)


def test_rescoring_replaces_only_words_close_to_the_vocabulary() -> None:
    r = Rescorer.for_assistant(DEFAULT)
    assert {"sales", "billing", "operator", "support", "invoice"} <= r.vocabulary
    out = r.rescore("Thales, please.")
    assert out.text == "Sales, please." and out.changes == (("Thales", "sales", 0.864),)
    for text in ("I'd like a pizza, please.", "sales please", "Two invoices", "Police help"):
        assert r.rescore(text).text == text
    assert Rescorer(frozenset({"sales"}), 1.0).rescore("Thales").text == "Thales"


def test_deepgram_is_prompted_with_the_assistants_vocabulary() -> None:
    cfg = parse_config("""
assistants:
  x:
    provider: pipeline
    stt: {engine: deepgram}
    destinations: {sales: {context: c, exten: "1"}, front-desk: {context: c, exten: "0"}}
    brain:
      intents:
        - {name: s, reply: r, keywords: [sales, price], phrases: ["buy something"]}
        - {name: b, reply: r, keywords: [Sales, "that's all"]}
  given:
    provider: pipeline
    stt: {engine: deepgram, keyterms: [ACME]}
    brain: {intents: [{name: s, reply: r, keywords: [sales]}]}
  nova2:
    provider: pipeline
    stt: {engine: deepgram, model: nova-2-phonecall}
    brain: {intents: [{name: s, reply: r, keywords: [sales]}]}
""", "t.yaml")
    x, given, nova2 = cfg.assistants
    assert x.stt.keyterms == ("sales", "price", "buy something", "that's all", "front-desk")
    assert given.stt.keyterms == ("ACME",) and nova2.stt.keyterms == ()
    url = DeepgramListen(x.stt, {"DEEPGRAM_API_KEY": "k"}, "en").url
    assert parse_qs(urlsplit(url).query)["keyterm"] == list(x.stt.keyterms)
    assert default_keyterms(DEFAULT) == ()  # Moonshine takes no hints: it is re-scored
    assert {"sales", "price", "something", "front", "desk"} <= vocabulary_words(x)
    assert not {"buy", "thats", "all"} & vocabulary_words(x)  # short or function words


def test_a_record_without_transcripts_keeps_the_score_not_the_words() -> None:
    rec = CallRecord(uuid="u", assistant="a", turns=[TurnRecord(
        0, "speech", caller_text="Thales, please.", rescored_text="Sales, please.",
        match={"term": "sales", "heard": "sales", "score": 1.0, "how": "keyword"})])
    from dataclasses import asdict

    turn = without_text(asdict(rec))["turns"][0]
    assert turn["caller_text"] == turn["rescored_text"] == ""
    assert turn["match"] == {"term": "sales", "heard": "", "score": 1.0, "how": "keyword"}


async def test_an_llm_assistant_follows_the_no_input_action_too() -> None:
    from media_sidecar.config.schema import Action, LlmConfig, NoInput
    from media_sidecar.pipeline.llm_brain import LlmBrain

    class Silent:
        name = "never asked"

        async def stream(self, messages, tools):  # pragma: no cover - no request is made
            raise AssertionError("no-input is answered without the model")
            yield

    rules = RulesBrainConfig(no_input=NoInput(max_reprompts=0, hangup_reply="A person now.",
                                              action=Action("transfer", "operator", "no input")))
    b = LlmBrain(Silent(), LlmConfig(engine="openai"), rules, instructions="", greeting="",
                 tools=[])
    info = TurnInfo()
    outs = [o async for o in b.respond(NoInputTimeout(1), info)]
    assert outs == [Say("A person now.", interruptible=False),
                    Act("transfer", destination="operator", reason="no input")]
    assert info.intent == "no_input_transfer"
