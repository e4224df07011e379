"""A mock of the Deepgram Voice Agent API V1 (``/v1/agent/converse``), written from
reference/providers.md section 2 and Deepgram's asyncapi spec.

Modelled:

* the upgrade: ``Authorization: Token <key>`` or ``Bearer <key>`` (or the browser-style
  ``Sec-WebSocket-Protocol: token, <key>``); otherwise HTTP 401 with a Deepgram JSON body
  ``{"err_code": "INVALID_AUTH", "err_msg": ..., "request_id": ...}``; another path is 404; a
  scripted status (503, say) refuses every upgrade;
* ``Welcome {request_id}``, then ``Settings`` validated against 2.2 (schema faults are
  UNPARSABLE_CLIENT_MESSAGE "Error parsing client message. Check the <field> field ...", as the
  live service words them; semantic faults are INVALID_SETTINGS), then ``SettingsApplied``;
  binary audio before that is an Error;
* input audio decoded per ``audio.input`` (mulaw, alaw, linear16, linear32 at any rate) through
  an energy VAD: ``UserStartedSpeaking`` (cutting the agent's audio at once), then at the end of
  speech ``ConversationText`` user and ``History``, then the agent's turn;
* agent messages: ``ConversationText`` assistant, ``History``, ``AgentStartedSpeaking`` (not for
  the greeting), binary audio in ``audio.output`` (linear16, mulaw or alaw, container none)
  paced on the runtime clock, ``AgentAudioDone``; an interrupted message gets no AgentAudioDone;
* function calls: ``FunctionCallRequest`` (``client_side`` true when the declared function has
  no ``endpoint``), the client's ``FunctionCallResponse`` matched by id, ``History``
  function_calls, the after-tool reply. A response with an unknown id gets a ``Warning`` of the
  mock's own code UNKNOWN_FUNCTION_CALL_ID and the session goes on; scripted
  ``FunctionCallCancelled {functions: [{id, name}]}`` (SDK 7.17) drops the turn, and a response
  after it is a problem unless it crossed the cancellation on the wire;
* ``LatencyReport`` after each agent turn (providers-2026-update.md 3.1; ``ttt_tool_latency``
  only for a turn with a function call);
* ``InjectUserMessage`` (a user turn), ``InjectAgentMessage`` (``message``, or ``content`` per the
  CONFLICT note, recorded as a problem; ``behavior`` default / queue / interrupt; refused with
  ``InjectionRefused`` while the user speaks or the agent is mid-turn), ``UpdatePrompt`` (appended),
  ``UpdateSpeak`` / ``UpdateThink`` / ``UpdateListen`` and their acknowledgements, ``KeepAlive``;
* ``Error`` is session-ending: it is followed by an empty close frame (the client sees 1005).
  Codes: INVALID_SETTINGS, UNPARSABLE_CLIENT_MESSAGE (bad JSON, unknown type, schema faults,
  messages before Settings), CLIENT_MESSAGE_TIMEOUT (neither audio nor KeepAlive for
  ``idle_timeout``), INTERNAL_SERVER_ERROR (scripted);
* scripted faults: ``error_after_turns``, ``disconnect_mid_turn`` (no close frame: 1006),
  ``first_byte_delay``, ``reject_with_status``.

Not modelled: functions with an ``endpoint`` are not executed (the request is sent with
``client_side: false`` and the server answers with ``server_function_result``);
AgentThinking, Flux's turn-taking (a v2 listen provider is validated: keys per version, the
end-of-turn ranges, language_hints only for flux-general-multi; but the VAD stays the same and
eot_* change nothing), ForceEndTurn, Think Live, fallback between speak/think entries (arrays are
validated, the first entry "works"),
stored agents by UUID (accepted, with no greeting and no functions), the 2 h session cap,
real speech recognition or synthesis (transcripts and a tone are scripted), mp3/opus/flac/aac
output and wav/ogg containers (refused with INVALID_SETTINGS).

It serves real TCP (:meth:`MockAgentServer.serve`) or any trio stream
(:meth:`MockAgentServer.serve_stream`, e.g. a memory stream under the autojump clock). As a
process, for the capacity benchmark::

    python -m tests.mocks.deepgram_agent --port 0 --ready FILE --api-key K [--reply-ms N]
        [--send-rate X]

Per input frame the cost is one table lookup (or ``frombuffer``) and one vectorised energy sum
per 20 ms; the reply audio is rendered once per output format and shared by all sessions.
"""

from __future__ import annotations

from .script import AgentScript, SessionClosedError, SessionLog, Speech
from .server import PATH, MockAgentServer

__all__ = ["PATH", "AgentScript", "MockAgentServer", "SessionClosedError", "SessionLog", "Speech"]
