"""A mock of OpenAI GPT-Live's primary WebSocket (``/v1/live/sessions``), written from
``shared/reference/providers-2026-update.md`` section 1 (1.13 in particular).

Modelled:

* the upgrade: no query string (400), ``Authorization: Bearer <key>`` (401 ``invalid_api_key``),
  the path (404), a scripted status (503, say), each with an OpenAI JSON error body;
* ``session.start`` first (anything before it is an ``error`` ``session_not_started``), checked
  strictly: unknown fields anywhere in the session, the delegation or a function tool are
  ``unknown_parameter``; ``model`` and ``audio.format.rate`` are required (8000 for pcmu/pcma,
  16000/24000 for pcm); a refused start is an ``error`` then a normal close. ``session.started``
  echoes ``client_event_id`` and the resolved session;
* caller audio (``session.input_audio.append``, never acknowledged) in the session's format
  through an energy VAD; the session timeline is the caller audio received, in ms. The caller's
  transcript streams as ``session.input_transcript.delta`` (first word when speech is noticed,
  the rest at its end) with ``start_ms``/``end_ms``; there are no speech-started events;
* full duplex: the model stops talking the moment it notices the caller (nothing is sent for
  it), answers after ``vad_end_ms`` of quiet; its audio leaves through one mixer at real-time
  pace in 20 ms deltas, silence included, with ``session.output_transcript.delta`` words paced
  alongside;
* commentary (``delegation_id`` null) makes the model speak: a quoted text verbatim (the
  greeting), else the next scripted reply; thinking/instructions appends are acknowledged;
  ``session.input_audio.mute`` replaces the caller's audio with silence (no barge-in);
* responses delegation (1.8 A): ``session.delegation.created``, an optional acknowledgement,
  ``response.event`` created / ``response.output_item.done`` (function_call) / completed with
  usage; ``response.item.create`` outputs matched by call_id; ``response.create`` refused with
  ``function_call_outputs_required`` while a call lacks its output; then the continuation and
  the after-tool utterance. A non-null ``delegation_id`` on an append is refused here;
* ``session.update`` (delegation and triggers only), fixtures (acknowledged, not played),
  ``session.usage.updated`` periodically, ``session.close`` -> usage + ``session.closed``
  (``close_requested``) + a 1000 close;
* faults: ``refuse_start`` (e.g. ``insufficient_quota``), ``close_after_turns`` (a
  ``session.closed`` with ``close_reason`` mid-call), ``disconnect_mid_turn`` (the stream drops:
  1006), ``reject_with_status``.

Every client mistake gets an ``error`` event (the session goes on) and a line in the log's
``problems``. Not modelled: client and decisions delegation beyond acknowledging, hosted tools,
fixture audio, triggers, the Decision API, context compaction, real recognition or synthesis.

It serves real TCP (:meth:`MockLiveServer.serve`) or any trio stream
(:meth:`MockLiveServer.serve_stream`, e.g. a memory stream under the autojump clock).

Modules: ``wire`` (the strict config and event rules; pure), ``script`` (LiveScript,
SessionLog), ``connection`` -> ``agent`` -> ``session`` (one connection: plumbing, the model,
the handlers), ``server`` (the upgrade), ``cli`` (the process).
"""

from tests.mocks.common import SessionClosedError
from tests.mocks.openai_live.script import LiveScript, SessionLog, Speech
from tests.mocks.openai_live.server import MockLiveServer

__all__ = ["LiveScript", "MockLiveServer", "SessionClosedError", "SessionLog", "Speech"]
