"""Typed, frozen configuration objects for both planes.

The YAML file is loaded once by :mod:`media_sidecar.config.loader`, validated into these
objects, and passed down explicitly. This module is the shared contract: ``fastagi_server``
imports it, never the other way round. Phone numbers, extensions and DTMF keys are strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

PIPELINE_PROVIDERS = frozenset({"local", "pipeline"})


@dataclass(frozen=True, slots=True)
class Listen:
    host: str = "127.0.0.1"
    port: int = 0


@dataclass(frozen=True, slots=True)
class MediaHost:
    """One media worker the FastAGI side places calls on besides the local ones
    (``fastagi.media``; usually a worker on another host, see docs/topology.md)."""

    control_url: str
    """ws:// URL of the worker's control link, as this FastAGI server reaches it."""
    audiosocket_address: str
    """host:port Asterisk connects AudioSocket to for calls placed on this worker."""
    name: str = ""
    """How logs and the offer name the worker; empty: its control URL's host:port."""
    health_url: str = ""
    """http:// URL of the worker's health listener (``http://host:9094``), where the dashboard
    reads its live calls (``/calls``); empty: the dashboard does not show its live calls."""


@dataclass(frozen=True, slots=True)
class FastAgiConfig:
    listen: Listen = Listen("127.0.0.1", 4573)
    env_timeout: float = 5.0
    """Seconds to wait for the whole agi_ environment block."""
    offer_timeout: float = 0.8
    """Seconds to wait for the sidecar's accept; AI_STATUS=FAILED is set well within 1 s."""
    audiosocket_address: str = ""
    """host:port Asterisk connects AudioSocket to; empty means the sidecar's listen address."""
    control_url: str = ""
    """ws:// URL of the sidecar control link; empty means the sidecar's control listen address."""
    answer: bool = True
    """Send ANSWER before EXEC AudioSocket when the channel is not up."""
    caller_rate_limit: int = 0
    """Calls one caller ID may start within ``caller_rate_window`` seconds; a call over it
    gets ``AI_STATUS=FAILED``, ``AI_REASON=rate-limited`` at once and the dialplan goes on.
    0 (the default): no limit. Callers without a number share one count."""
    caller_rate_window: float = 60.0
    """The sliding window of ``caller_rate_limit``, in seconds."""
    media: tuple[MediaHost, ...] = ()
    """Media workers started elsewhere (other hosts), placed on in addition to the local
    ones (``sidecar.workers``; 0 of those: only these)."""
    transfer: str = "auto"
    """How an assistant's transfer moves the channel: ``goto`` (the sidecar hands the call back
    and the FastAGI side runs ``EXEC Goto`` to the destination: no AMI needed, no Asterisk
    warnings; needs Asterisk 20.14, 21.9, 22.4, 23.0 or later), ``redirect`` (AMI Redirect, any
    version) or ``auto`` (goto where the channel's Asterisk version allows it, else redirect)."""
    allow: tuple[str, ...] = ("127.0.0.0/8", "::1")
    """Addresses and CIDR networks Asterisk connects to FastAGI from (an entry may hold
    several, separated by commas or spaces); any other connection is closed without a byte
    and logged. Default: loopback only."""


@dataclass(frozen=True, slots=True)
class PlayoutConfig:
    lead_frames: int = 0
    """Frames the writer may run ahead of the real-time grid (bounded lead; Asterisk does not
    buffer, so more than a few frames toward a real channel get dropped). 0 = exactly on time."""
    queue_seconds: float = 60.0
    """Most agent audio buffered for playout; more is refused (the producer waits)."""


@dataclass(frozen=True, slots=True)
class RecordsConfig:
    """Rotation, retention and content of the call-record file (``sidecar.records``); the
    file itself is ``sidecar.records_path``."""

    max_bytes: int = 64 * 1024 * 1024
    """The file is rotated (``calls.jsonl`` -> ``calls.jsonl.1`` ...) before a record would
    take it past this size; 0: no size limit."""
    backups: int = 8
    """Rotated files kept; the oldest beyond this is deleted."""
    max_age_days: float = 90.0
    """Records older than this are deleted (checked at start-up and hourly); 0: kept until
    rotation drops them."""
    transcripts: bool = True
    """False: records keep outcomes, timings and actions but no caller or agent text (and no
    keypad digits or tool arguments)."""


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """The call store (``store``, :mod:`media_sidecar.store`): finished calls for the call
    history, written by each media worker beside the JSON-lines records."""

    enabled: bool = True
    url: str = ""
    """Empty: ``sqlite:///<data dir>/calls.db``; ``sqlite:////abs/path.db``; or
    ``postgresql://user@host/db`` (password from ``$AGI_VOICE_STORE_PASSWORD`` or the URL)."""
    max_age_days: float = 90.0
    """Calls older than this are deleted (at start-up and hourly); 0: kept."""
    queue: int = 2000
    """Records waiting for the store; beyond it a record is left out of the store (counted in
    ``agi_voice_store_write_errors_total``) and only the JSON-lines record has it."""


@dataclass(frozen=True, slots=True)
class InferenceConfig:
    """Where local STT and TTS run (``sidecar.inference``): a pool of inference processes
    that load the models once each, so inference never shares the frame loop's GIL and core
    (see :mod:`media_sidecar.speech.pool`). Changing it needs a restart."""

    enabled: bool = True
    """False: in worker threads of the media process (one model copy, no extra processes;
    inference then delays frames)."""
    processes: int = 0
    """Inference processes; 0: one per CPU core the media process may run on."""
    threads: int = 1
    """onnxruntime intra-op threads per process (Piper; Moonshine: 1 or its default)."""
    nice: int = 5
    """Added to the processes' nice value, so the frame loop wins a busy core."""


@dataclass(frozen=True, slots=True)
class SidecarConfig:
    audiosocket: Listen = Listen("127.0.0.1", 9092)
    control: Listen = Listen("127.0.0.1", 9093)
    uuid_timeout: float = 2.0
    """The first AudioSocket message must be a UUID within this many seconds."""
    offer_ttl: float = 30.0
    """An offered UUID that never connects is forgotten after this many seconds."""
    max_payload: int = 4096
    max_calls: int = 100
    records_path: str = ""
    """JSON-lines file for call records; empty means records are only logged."""
    playout: PlayoutConfig = PlayoutConfig()
    caller_queue_frames: int = 50
    """Unused since the frame clock hands each call its caller's audio in its tick (nothing is
    queued or dropped); still accepted so existing files load."""
    records: RecordsConfig = RecordsConfig()
    inference: InferenceConfig = InferenceConfig()
    workers: int | None = None
    """Media worker processes ``serve`` runs; None (the default): one per CPU this process
    may run on; 0: none (FastAGI only, placing calls on ``fastagi.media``). Worker ``i``
    listens on each sidecar and health port + ``i * worker_port_step``."""
    pin_workers: bool = False
    """Pin worker ``i`` to the ``i``-th CPU this process may run on (``sched_setaffinity``)."""
    worker_port_step: int = 10
    """Worker ``i`` uses port + ``i`` * this for AudioSocket, the control link and health."""


@dataclass(frozen=True, slots=True)
class RecordingsConfig:
    """Where call recordings go and how long they stay (``recordings``); which calls are
    recorded is each assistant's ``recording`` (see :mod:`media_sidecar.session.recording`)."""

    path: str = ""
    """The folder of ``<YYYY-MM-DD>/<uuid>.wav``; empty: ``recordings`` in the data directory
    (``$AGI_VOICE_DATA_DIR``, else systemd's ``StateDirectory``, else
    ``~/.local/state/agi-voice``)."""
    max_age_days: float = 30.0
    """Recordings older than this are deleted (at start-up and hourly); 0: kept."""


@dataclass(frozen=True, slots=True)
class HealthConfig:
    """The HTTP listener for ``/live``, ``/ready``, ``/health`` and ``/metrics`` (served by
    the media sidecar process; see :mod:`media_sidecar.server.health`)."""

    enabled: bool = True
    listen: Listen = Listen("127.0.0.1", 9094)
    """Port 0 turns the listener off, like ``enabled: false``. Loopback by default: the
    endpoints are unauthenticated."""

    @property
    def active(self) -> bool:
        return self.enabled and self.listen.port != 0


@dataclass(frozen=True, slots=True)
class DashboardConfig:
    """The web dashboard (``agi-voice dashboard``, and a child process of ``serve``): live
    calls, call history, call detail and charts (see :mod:`fastagi_server.dashboard`). Loopback
    by default; bound to any other address it requires a login, with the password from
    ``$AGI_VOICE_DASHBOARD_PASSWORD`` only (it refuses to start without one there)."""

    enabled: bool = True
    listen: Listen = Listen("127.0.0.1", 9095)
    user: str = "admin"
    title: str = "agi-voice"


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    """Log format and levels for both planes (``logging``). ``--log-format`` on the command
    line wins over ``format``; ``-v`` makes everything DEBUG."""

    level: str = "INFO"
    format: Literal["text", "kv", "json"] = "text"
    levels: tuple[tuple[str, str], ...] = ()
    """Logger name -> level, e.g. ``agi_voice.ami: DEBUG`` (written as a YAML mapping)."""


@dataclass(frozen=True, slots=True)
class DrainConfig:
    """A graceful stop (SIGTERM or SIGINT; ``drain``). New calls are refused at once
    (``AI_STATUS=FAILED``, ``AI_REASON=draining``: the dialplan falls back), live calls get
    ``deadline_seconds`` to finish, then each one left hears ``announcement`` and goes to its
    assistant's ``fallback_destination`` (without one: handed back with ``AI_STATUS=FAILED``,
    ``AI_REASON=draining``). Every call record is written before the process exits."""

    deadline_seconds: float = 30.0
    """Keep systemd's ``TimeoutStopSec`` (and compose's ``stop_grace_period``) about 15 s above
    it: the hand-offs, their announcement and the records come after the deadline."""
    announcement: str = "I'm sorry, I have to pass your call on now. One moment, please."
    """Said to each call still live at the deadline, before its hand-off (rendered once at
    start-up with the local TTS, like the apology); empty: none."""


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """How ``agi-voice serve`` runs as a service (``service``)."""

    runtime_dir: str = ""
    """Where ``serve`` writes its pid file, ``agi-voice-<FastAGI port>.pid``, which
    ``agi-voice reload`` reads. Empty: ``$RUNTIME_DIRECTORY`` (systemd's
    ``RuntimeDirectory=``), else ``$XDG_RUNTIME_DIR``, else the temporary directory."""
    control_secret_env: str = "AGI_VOICE_CONTROL_SECRET"
    """The environment variable holding the control link's shared secret
    (:mod:`media_sidecar.protocol.control_auth`). Required whenever either end of a link is
    not on loopback; without it ``serve`` generates one for its own planes into
    ``agi-voice-<FastAGI port>.control-secret`` (mode 0600) beside the pid file."""


@dataclass(frozen=True, slots=True)
class AmiConfig:
    host: str = ""
    port: int = 5038
    username: str = ""
    secret: str = field(default="", repr=False)
    action_timeout: float = 5.0
    ping_interval: float = 10.0
    pong_timeout: float = 5.0
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0

    @property
    def enabled(self) -> bool:
        return bool(self.host and self.username)


@dataclass(frozen=True, slots=True)
class Match:
    """One routing condition set; every given field must match (AND). Regexes are full-match."""

    script: str | None = None
    query: tuple[tuple[str, str], ...] = ()
    dnid: str | None = None
    extension: str | None = None
    callerid: str | None = None
    context: str | None = None
    variables: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Rule:
    match: Match
    assistant: str


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    default: str = ""
    rules: tuple[Rule, ...] = ()
    allow_channel_override: bool = True
    """Whether the AI_ASSISTANT channel variable (or ?assistant= in the AGI URL) picks the
    assistant. The dialplan is trusted; the caller cannot set channel variables."""


@dataclass(frozen=True, slots=True)
class Destination:
    """A dialplan location a transfer goes to (AMI Redirect, or the dialplan on AI_STATUS)."""

    context: str
    exten: str
    priority: str = "1"
    description: str = ""


@dataclass(frozen=True, slots=True)
class Action:
    kind: Literal["none", "transfer", "hangup"] = "none"
    destination: str = ""
    """For transfer: a key of the assistant's destinations."""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Intent:
    name: str
    reply: str
    phrases: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    action: Action = Action()


@dataclass(frozen=True, slots=True)
class DtmfMapping:
    digit: str
    reply: str = ""
    action: Action = Action()


@dataclass(frozen=True, slots=True)
class NoInput:
    after: float = 8.0
    """Seconds of caller silence after the agent stops talking before a reprompt."""
    reprompt: str = "Are you still there?"
    max_reprompts: int = 2
    hangup_reply: str = "I haven't heard anything, so I'll end the call now. Goodbye."
    """Said after the last reprompt, before ``action``."""
    action: Action = Action("hangup", reason="no input")
    """What follows the last reprompt: ``hangup`` (AI_STATUS=COMPLETED, AI_REASON=no input) or
    a ``transfer`` to a destination (a person may hear a caller the recogniser cannot)."""


@dataclass(frozen=True, slots=True)
class NotUnderstood:
    """Speech heard but matching no intent (distinct from silence, ``no_input``)."""

    after: int = 2
    """Misunderstandings in a row after which the caller is offered a person and transferred
    (the first ones get the ``fallback`` reply); 0: never, the fallback reply repeats."""
    reply: str = "Sorry, I'm having trouble understanding. Let me get you a person."
    destination: str = ""
    """A destinations key; empty: the assistant's ``fallback_destination`` (none: never)."""


@dataclass(frozen=True, slots=True)
class RulesBrainConfig:
    greeting: str = "Hello, how can I help you?"
    intents: tuple[Intent, ...] = ()
    dtmf: tuple[DtmfMapping, ...] = ()
    fallback: str = "Sorry, I didn't catch that. Could you say it another way?"
    """Said when speech matched no intent (not understood)."""
    no_input: NoInput = NoInput()
    not_understood: NotUnderstood = NotUnderstood()
    min_confidence: float = 0.8
    """How close (0..1) the caller's words must be to a keyword or phrase, in spelling and
    sound, for a fuzzy match ("Thales" for "sales" scores 0.86); exact matches score 1.0 and
    always win. 1.0: exact matches only. Also how close a word must be to the assistant's
    vocabulary for the local STT's re-scoring (``stt.rescore``)."""


@dataclass(frozen=True, slots=True)
class VadConfig:
    aggressiveness: int = 2
    start_ms: int = 120
    """Voiced audio needed before speech is declared started."""
    end_ms: int = 700
    """End-of-speech hangover: unvoiced audio that ends an utterance."""
    min_energy_dbfs: float = -45.0
    """Frames quieter than this are never speech (line noise, comfort noise)."""


@dataclass(frozen=True, slots=True)
class FillerConfig:
    """A short phrase said while a pipeline assistant's answer is slow (``filler``): no dead
    air while it thinks. Rendered once at start-up with the local voice; at most once per
    turn, never over the answer (the answer waits for its last frame)."""

    after: float = 1.2
    """Seconds from the end of the caller's speech (or the keypress) with no sentence of the
    answer yet; 0: never."""
    text: str = "One moment."


@dataclass(frozen=True, slots=True)
class BargeInConfig:
    enabled: bool = True
    min_speech_ms: int = 240
    """Caller speech must last this long during playout before the agent is cut off."""
    greeting_protection_ms: int = 1500
    """The first part of the greeting cannot be interrupted."""


@dataclass(frozen=True, slots=True)
class SttConfig:
    """The pipeline's speech-to-text stage (``stt:``).

    ``moonshine`` (offline) and ``openai`` (REST, one request per utterance) transcribe what
    agi-voice's own VAD cut as an utterance; ``deepgram`` streams all caller audio over a
    WebSocket and Deepgram's endpointing ends the caller's turn.
    """

    engine: Literal["moonshine", "deepgram", "openai"] = "moonshine"
    model: str = ""
    """Empty: the engine's default (tiny-en, nova-3, gpt-transcribe)."""
    url: str = ""
    """Empty: the vendor's endpoint. A proxy or a compatible server: its URL here."""
    api_key_env: str = ""
    """Environment variable with the key; empty: DEEPGRAM_API_KEY or OPENAI_API_KEY."""
    language: str = ""
    """Empty: the assistant's language."""
    endpointing_ms: int = 300
    """Deepgram: silence that ends an utterance (its ``endpointing``)."""
    utterance_end_ms: int = 1000
    """Deepgram: ``UtteranceEnd`` after this long without words (ends a turn that
    endpointing missed, e.g. in noise)."""
    keyterms: tuple[str, ...] = ()
    """Deepgram nova-3 and Flux: words to recognise better (product names, surnames); empty:
    the rule brain's keywords and phrases (and destination names) are sent."""
    prompt: str = ""
    """OpenAI: a prompt guiding the transcription (vocabulary, spelling)."""
    rescore: bool = True
    """Moonshine: words of the transcript close in spelling and sound to the assistant's
    vocabulary (its intents' keywords and phrases, ``keyterms``, destination names) are
    replaced by the vocabulary word ("Thales" -> "sales"); the call record keeps both texts."""
    acoustic: bool = True
    """Moonshine with a rule brain: when the transcript matches no intent (or only fuzzily),
    the assistant's own phrases are scored against the caller's audio by the recogniser's
    decoder, and the best one is taken if it scores within ``acoustic_margin`` of the free
    transcript ("Feel." -> "Sales."; the record's match says ``how: acoustic``)."""
    acoustic_margin: float = 2.5
    """How far (natural log) the best phrase's log-probability given the audio may be below
    the reference (the better of the free transcript's and the model's own decoding's) and
    still be taken; lower: fewer acceptances and fewer false ones. 2.5 is calibrated on
    bench/bench_intent.py (out-of-scope requests scored 5.9 or more below)."""
    timeout: float = 5.0
    """Seconds to connect (Deepgram) or for one transcription (OpenAI)."""


@dataclass(frozen=True, slots=True)
class LlmConfig:
    """The pipeline's language model (``llm:``); ``engine: none`` keeps the rule brain only.

    ``openai``: any OpenAI-compatible ``/chat/completions`` endpoint, streamed (OpenAI, Groq,
    vLLM, llama.cpp server, LM Studio, Ollama's ``/v1``). ``ollama``: Ollama's native
    ``/api/chat``. ``llama_cpp``: a GGUF file in-process (the ``llama`` extra, not built in CI).
    """

    engine: Literal["none", "openai", "ollama", "llama_cpp"] = "none"
    url: str = ""
    """Base URL. Empty: https://api.openai.com/v1 or http://127.0.0.1:11434."""
    model: str = ""
    """Empty: gpt-5.4-mini (openai) or llama3.2 (ollama). gpt-4o-mini, gpt-4.1(-mini) shut
    down 2027-01-14 and gpt-5(-mini) 2026-12-11 (openai SDK 3.63); gpt-5.4-mini has no
    announced shutdown."""
    api_key_env: str = "OPENAI_API_KEY"
    """For ``openai``. With a custom ``url`` a missing variable means no Authorization header
    (local servers need none); with OpenAI's own URL it is an error."""
    rules_first: bool = False
    """The rule brain answers what its intents and DTMF mappings cover (fast, predictable);
    the LLM answers the rest."""
    temperature: float = 0.7
    """Sent with ``max_tokens`` only: reasoning models refuse a non-default temperature."""
    max_tokens: int = 300
    """The answer's length cap, sent as ``token_param`` says."""
    token_param: Literal["auto", "max_tokens", "max_completion_tokens"] = "auto"
    """``max_completion_tokens``: the cap goes as ``max_completion_tokens`` and no
    ``temperature`` is sent (o-series and gpt-5 models refuse ``max_tokens`` and a
    non-default temperature); ``max_tokens``: ``max_tokens`` and ``temperature`` (older
    OpenAI-compatible servers know only these); ``auto``: ``max_completion_tokens`` for
    models named o1/o3/o4/gpt-5..., else ``max_tokens``."""
    history_messages: int = 40
    """The conversation kept for the model (oldest dropped first; the system prompt stays)."""
    timeout: float = 5.0
    """Seconds to the first token; longer is a failed turn (apology, fallback). The caller
    hears the ``filler`` after 1.2 s meanwhile. A local model that must first load (Ollama
    after ``keep_alive``) may need more."""
    keep_alive: str = "5m"
    """Ollama: how long the model stays loaded after a call."""
    model_path: str = ""
    """llama_cpp: the GGUF file."""
    max_tool_rounds: int = 4
    """Tool calls the model may chain in one turn before it must answer."""


@dataclass(frozen=True, slots=True)
class TtsConfig:
    """The pipeline's text-to-speech stage (``tts:``): ``piper`` (offline), ``deepgram``
    (Aura: streaming WebSocket, REST when the socket cannot be opened) or ``openai``."""

    engine: Literal["piper", "deepgram", "openai"] = "piper"
    voice: str = ""
    """Empty: joe-us (piper), aura-2-thalia-en (deepgram model), marin (openai)."""
    model: str = ""
    """OpenAI speech model; empty: gpt-4o-mini-tts."""
    speed: float = 1.0
    url: str = ""
    """Empty: the vendor's endpoint."""
    api_key_env: str = ""
    """Empty: DEEPGRAM_API_KEY or OPENAI_API_KEY."""
    instructions: str = ""
    """OpenAI gpt-4o-mini-tts: how to speak (tone, pace)."""
    streaming: bool = True
    """Deepgram: the WebSocket (lowest latency); false: REST per sentence."""
    timeout: float = 5.0
    """Seconds to connect or to the first audio of a sentence."""


@dataclass(frozen=True, slots=True)
class RealtimeConfig:
    """A speech-to-speech session with OpenAI Realtime (``provider: openai_realtime``).

    The API key is read from the environment variable named by ``api_key_env`` when a call
    connects; it is never part of the file or of this object. Instructions and greeting are the
    assistant's (:attr:`AssistantConfig.instructions`, :attr:`AssistantConfig.greeting`).
    """

    url: str = "wss://api.openai.com/v1/realtime"
    """WebSocket endpoint; ``?model=`` is added. Azure OpenAI or a proxy: put its URL here."""
    model: str = "gpt-realtime-2.1"
    """gpt-realtime and gpt-realtime-mini shut down 2027-01-20 (openai SDK 3.63); the 2.1
    models are their replacements."""
    voice: str = "marin"
    api_key_env: str = "OPENAI_API_KEY"
    auth: Literal["bearer", "api-key"] = "bearer"
    """``bearer`` sends ``Authorization: Bearer``; ``api-key`` sends Azure's ``api-key`` header."""
    audio: Literal["auto", "ulaw", "pcm"] = "auto"
    """``auto`` and ``ulaw``: G.711 mu-law 8 kHz both ways (no resampling); ``pcm``: PCM16 at
    24 kHz through the stateful resampler. The format the provider confirms always wins."""
    turn_detection: Literal["server_vad", "semantic_vad", "none"] = "server_vad"
    """``none``: the provider's turn detection is off and agi-voice takes turns with its own
    VAD (the assistant's ``vad`` settings): barge-in, commit and response requests are local."""
    vad_threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_ms: int = 500
    transcription_model: str = "gpt-transcribe"
    """Model that transcribes the caller for the call record; empty turns it off.
    (gpt-4o-mini-transcribe and whisper-1 shut down 2027-02-26.)"""
    reasoning_effort: Literal["", "minimal", "low", "medium", "high", "xhigh"] = ""
    """``session.reasoning.effort`` for reasoning Realtime models (gpt-realtime-2...); empty:
    the model's default. Never sent to a model that does not reason (the API refuses it)."""
    connect_timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class DeepgramSpeakEntry:
    """One TTS provider in ``deepgram.speak`` (a fallback list: Deepgram uses the first that
    works; providers-2026-update.md 3.7, SDK 7.17 ``speak_settings_v1provider.py``)."""

    provider: Literal["deepgram", "open_ai", "eleven_labs", "cartesia"] = "deepgram"
    model: str = ""
    """Deepgram and OpenAI: ``model``; ElevenLabs and Cartesia: ``model_id``."""
    voice: str = ""
    """OpenAI: the voice (required); Cartesia: the voice id (required)."""
    language: str = ""
    """ElevenLabs and Cartesia only."""
    url: str = ""
    """``endpoint.url``: required for every provider but Deepgram; https, or wss for
    ElevenLabs only."""
    headers_env: tuple[tuple[str, str], ...] = ()
    """``endpoint.headers``: header name -> environment variable holding its value (the
    provider's key: secrets only from the environment), written as a YAML mapping."""


@dataclass(frozen=True, slots=True)
class DeepgramThinkEntry:
    """One LLM in ``deepgram.think`` (a fallback list, SDK 7.17 ``think_settings_v1.py``);
    every entry gets the assistant's instructions and tools."""

    provider: Literal["open_ai", "anthropic", "google", "groq", "deepgram"] = "open_ai"
    model: str = ""
    temperature: float | None = None
    url: str = ""
    """``endpoint.url``: a custom LLM endpoint Deepgram calls (https)."""
    headers_env: tuple[tuple[str, str], ...] = ()
    """``endpoint.headers``: header name -> environment variable (as for speak)."""


@dataclass(frozen=True, slots=True)
class LiveConfig:
    """A speech-to-speech session with OpenAI GPT-Live (``provider: openai_live``).

    Full duplex: the model hears the caller while it speaks and takes turns (barge-in included)
    itself; tools run by *delegation* to a backend Responses model (``delegate_model``) whose
    function calls agi-voice answers. The key is read from ``api_key_env`` when a call connects.
    Voice, instructions and audio format are fixed for the whole session.
    """

    url: str = "wss://api.openai.com/v1/live/sessions"
    """WebSocket endpoint (no query: the model goes in ``session.start``)."""
    model: str = "gpt-live-1"
    voice: str = "marin"
    api_key_env: str = "OPENAI_API_KEY"
    audio: Literal["auto", "pcmu", "pcm"] = "auto"
    """``auto`` and ``pcmu``: G.711 mu-law 8 kHz both ways (no resampling); ``pcm``: PCM16 at
    ``pcm_rate`` through the stateful resampler."""
    pcm_rate: int = 16000
    """Rate of ``pcm`` audio: 16000 or 24000 (8 kHz PCM is not a GPT-Live format)."""
    delegate_model: str = "gpt-5.6-luna"
    """The backend Responses model that runs the tools (required by the API; the default is the
    one LiveKit uses, not an OpenAI-documented default)."""
    delegate_instructions: str = ""
    """The backend model's prompt; empty: a short built-in one plus the assistant's
    instructions."""
    acknowledgement_delay_ms: int = 400
    """How long a delegated task may run before the model says a short acknowledgement."""
    jitter_ms: int = 60
    """Agent audio held at the start of each utterance before it is played (the server sends
    at real-time pace; this absorbs network jitter). 0: none."""
    end_silence_ms: int = 300
    """Silence (or no audio) from the server that ends an agent utterance in the call record."""
    ping_seconds: float = 30.0
    """WebSocket ping period (GPT-Live has no keepalive event); 0: none."""
    connect_timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class DeepgramAgentConfig:
    """A Deepgram Voice Agent V1 session (``provider: deepgram_agent``).

    Deepgram runs listen (STT), think (an LLM it calls) and speak (TTS) itself; the key is read
    from the environment variable named by ``api_key_env``.
    """

    url: str = "wss://agent.deepgram.com/v1/agent/converse"
    api_key_env: str = "DEEPGRAM_API_KEY"
    audio: Literal["auto", "mulaw", "linear16"] = "auto"
    """``auto``/``mulaw``: 8 kHz mu-law both ways (no conversion); ``linear16``: PCM16 at
    ``sample_rate`` through the stateful resampler."""
    sample_rate: int = 16000
    """Rate of ``linear16`` audio (8000, 16000, 24000 or 48000)."""
    listen_model: str = "nova-3"
    """With ``listen_version: v2``: ``flux-general-en`` or ``flux-general-multi``."""
    listen_version: Literal["v1", "v2"] = "v1"
    """``v2`` is Flux, whose end-of-turn settings follow (providers-2026-update.md 3.2);
    with ``v1`` they must be left unset."""
    eot_threshold: float | None = None
    """Flux: end-of-turn confidence that ends the caller's turn, 0.5-1.0 (Deepgram's default
    0.7; 1.0 leaves only ``eot_timeout_ms``)."""
    eager_eot_threshold: float | None = None
    """Flux: 0.3-0.9; set, Deepgram starts thinking at this lower confidence (eager
    end-of-turn) and drops the draft if the caller goes on."""
    eot_timeout_ms: int | None = None
    """Flux: the turn ends this long after speech whatever the confidence, 500-60000
    (Deepgram's default 5000)."""
    language_hints: tuple[str, ...] = ()
    """Flux ``flux-general-multi`` only: BCP-47 languages to bias towards."""
    keyterms: tuple[str, ...] = ()
    think_provider: str = "open_ai"
    """Deepgram's name for the LLM provider: open_ai, anthropic, google, groq, ..."""
    think_model: str = "gpt-4o-mini"
    temperature: float = 0.7
    think_url: str = ""
    """A custom OpenAI-compatible LLM endpoint Deepgram calls (``think.endpoint.url``)."""
    speak_model: str = "aura-2-thalia-en"
    speak: tuple[DeepgramSpeakEntry, ...] = ()
    """TTS providers in fallback order, instead of ``speak_model`` (sent as ``agent.speak``,
    an array when there are several)."""
    think: tuple[DeepgramThinkEntry, ...] = ()
    """LLMs in fallback order, instead of ``think_provider``, ``think_model``,
    ``temperature`` and ``think_url``."""
    keepalive_seconds: float = 8.0
    """KeepAlive is sent after this long without caller audio (Deepgram closes idle sockets)."""
    connect_timeout: float = 5.0
    tags: tuple[str, ...] = ("agi-voice",)


@dataclass(frozen=True, slots=True)
class EchoConfig:
    """The echo assistant (``provider: echo``): the caller hears themselves, relayed in chunks
    like a provider's audio deltas. For trying a dialplan and for benchmarks."""

    chunk_ms: int = 100
    """Caller audio is collected into chunks of this length before it is played back."""


@dataclass(frozen=True, slots=True)
class WebhookTool:
    """An HTTP tool the model may call: the arguments and the call context are POSTed as JSON
    to ``url`` and the response body is returned to the model."""

    name: str
    url: str
    description: str = ""
    parameters: str = ""
    """JSON schema of the arguments, as JSON text (written as a YAML mapping in the file)."""
    method: Literal["POST", "GET"] = "POST"
    timeout: float = 5.0
    headers: tuple[tuple[str, str], ...] = ()
    """Literal, non-secret headers."""
    headers_env: tuple[tuple[str, str], ...] = ()
    """Header name -> environment variable holding its value (secrets: read per call)."""
    max_result_bytes: int = 4096
    allow_http: bool = False
    """Allow an ``http://`` URL (default: https only)."""
    allow_private: bool = False
    """Allow a URL whose host resolves to a private, loopback or link-local address (default:
    refused after DNS resolution, against SSRF). Cloud metadata addresses stay refused."""


@dataclass(frozen=True, slots=True)
class ToolsConfig:
    """The functions a model-driven assistant may call."""

    transfer: bool = True
    """Offer ``transfer_call`` (only to the assistant's destinations) when it has any."""
    hangup: bool = True
    """Offer ``hangup_call`` (the call ends after the farewell is heard)."""
    webhooks: tuple[WebhookTool, ...] = ()


@dataclass(frozen=True, slots=True)
class DtmfInputConfig:
    """How keypad digits reach a model-driven assistant: as a user message."""

    to_model: bool = True
    inter_digit_ms: int = 1500
    """Digits pressed within this gap are sent together."""
    terminator: str = "#"
    """A key that sends the digits at once (it is included); empty for none."""
    max_digits: int = 20


@dataclass(frozen=True, slots=True)
class AssistantConfig:
    name: str
    provider: str = "local"
    """``pipeline`` (STT -> brain -> TTS, each stage chosen in ``stt``/``llm``/``tts``;
    ``local`` is the same, its historical name), ``openai_realtime``, ``openai_live`` or
    ``deepgram_agent``
    (speech to speech), or ``echo``."""
    language: str = "en"
    audio_format: str = "slin"
    """The call's AudioSocket payload codec (an Asterisk format name): ``slin`` (the
    AudioSocket() application, always slin 8 kHz), or ``ulaw``/``alaw``/``slin16``, which the
    FastAGI server connects with ``Dial(AudioSocket/host:port/uuid/c(<format>))`` so the
    caller's codec reaches the sidecar as it is (see :attr:`media_path`)."""
    stt: SttConfig = SttConfig()
    tts: TtsConfig = TtsConfig()
    llm: LlmConfig = LlmConfig()
    vad: VadConfig = VadConfig()
    barge_in: BargeInConfig = BargeInConfig()
    filler: FillerConfig = FillerConfig()
    brain: RulesBrainConfig = RulesBrainConfig()
    realtime: RealtimeConfig = RealtimeConfig()
    deepgram: DeepgramAgentConfig = DeepgramAgentConfig()
    live: LiveConfig = LiveConfig()
    echo: EchoConfig = EchoConfig()
    instructions: str = "You are a friendly, concise phone assistant. Keep answers short."
    """The model's instructions (system prompt), a template filled with the call context:
    {caller_id}, {caller_name}, {dnid}, {assistant}, {date}, {time}, {weekday},
    {time_of_day}, {var.NAME} (the AI_VAR_NAME channel variable); {{ and }} for braces."""
    greeting: str = ""
    """Said first by a model-driven assistant (same template); empty: the caller speaks first."""
    timezone: str = ""
    """IANA zone for {date}/{time}/{time_of_day}; empty: the server's local time."""
    tools: ToolsConfig = ToolsConfig()
    dtmf_input: DtmfInputConfig = DtmfInputConfig()
    fallback_assistant: str = ""
    """Another assistant that takes the call when this one's provider cannot start (e.g. the
    offline local assistant); empty: the call is handed back at once with AI_STATUS=FAILED."""
    apology: str = "I'm sorry, I'm having technical difficulties."
    """Said (with the local TTS, rendered at start-up) when the provider fails mid-call,
    before the fallback destination or the hand-back; empty: no apology."""
    apology_file: str = ""
    """A recording to play instead: WAV (8 kHz mono 16-bit) or raw slin 8 kHz."""
    start_timeout: float = 4.0
    """Seconds the provider may take to be ready before the fallback is used."""
    destinations: tuple[tuple[str, Destination], ...] = ()
    fallback_destination: str = ""
    """Where a failing call goes (a destinations key); empty ends the call with AI_STATUS."""
    max_call_seconds: float = 900.0
    answer_timeout: float = 10.0
    """Speech-to-speech: seconds the provider may leave the caller in silence while it owes an
    answer (after the caller stopped speaking or keyed digits, a tool's result, or in the middle
    of its answer) before the call counts as failed: the apology, then ``fallback_destination``
    (or the hand-back with ``FAILED``). Audio still playing does not count; 0: never."""
    recording: bool = False
    """Record this assistant's calls: a stereo WAV, the caller left and the agent right, in
    ``recordings.path`` (tell callers: see the README's note on consent)."""

    @property
    def media_path(self) -> Literal["app", "dial"]:
        """How Asterisk joins the call to the sidecar: ``app`` (``EXEC AudioSocket``, slin
        8 kHz) or ``dial`` (``EXEC Dial "AudioSocket/...c(<audio_format>)..."``, any other
        format)."""
        return "app" if self.audio_format == "slin" else "dial"

    @property
    def is_pipeline(self) -> bool:
        """Served by the pipeline session (agi-voice runs STT, brain and TTS itself)."""
        return self.provider in PIPELINE_PROVIDERS

    @property
    def offline(self) -> bool:
        """A pipeline whose every stage runs here (nothing remote can fail mid-call)."""
        return (self.is_pipeline and self.stt.engine == "moonshine" and self.tts.engine == "piper"
                and self.llm.engine in ("none", "llama_cpp"))

    @property
    def uses_llm(self) -> bool:
        return self.is_pipeline and self.llm.engine != "none"

    def destination(self, key: str) -> Destination | None:
        for name, dest in self.destinations:
            if name == key:
                return dest
        return None


@dataclass(frozen=True, slots=True)
class Config:
    fastagi: FastAgiConfig = FastAgiConfig()
    sidecar: SidecarConfig = SidecarConfig()
    ami: AmiConfig = AmiConfig()
    routing: RoutingConfig = RoutingConfig()
    assistants: tuple[AssistantConfig, ...] = ()
    source: str = "<embedded default>"
    health: HealthConfig = HealthConfig()
    dashboard: DashboardConfig = DashboardConfig()
    recordings: RecordingsConfig = RecordingsConfig()
    logging: LoggingConfig = LoggingConfig()
    drain: DrainConfig = DrainConfig()
    service: ServiceConfig = ServiceConfig()
    store: StoreConfig = StoreConfig()

    def assistant(self, name: str) -> AssistantConfig | None:
        for a in self.assistants:
            if a.name == name:
                return a
        return None

    @property
    def audiosocket_address(self) -> str:
        if self.fastagi.audiosocket_address:
            return self.fastagi.audiosocket_address
        a = self.sidecar.audiosocket
        return f"{a.host}:{a.port}"

    @property
    def control_url(self) -> str:
        if self.fastagi.control_url:
            return self.fastagi.control_url
        c = self.sidecar.control
        return f"ws://{c.host}:{c.port}/control"
