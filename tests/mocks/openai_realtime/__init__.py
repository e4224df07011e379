"""A mock of the OpenAI Realtime API (GA, WebSocket), written from reference/providers.md section 1.

It speaks the GA wire protocol: ``session.created`` on connect, ``session.update`` merged into
the effective config and echoed in full by ``session.updated``, never-acknowledged
``input_audio_buffer.append``, an energy VAD (``server_vad`` / ``semantic_vad``) or manual
commits, the exact response event sequences of 1.7 (audio), 1.8 (barge-in) and 1.9 (function
call), truncation checked against the audio generated for the item, ``error`` events of 1.10 that
leave the session open, and HTTP errors at the upgrade. A response answers the latest user input,
a committed turn's transcript or a user ``input_text`` message (DTMF); a scripted function call is
made only with a declared tool. What it does is steered by a :class:`RealtimeScript`; what
happened is recorded in one :class:`SessionLog` per connection.

Modules: ``wire`` (constants, audio helpers, session.update rules; pure), ``script``
(RealtimeScript, SessionLog), ``connection`` -> ``responses`` -> ``session`` (one connection:
plumbing, the output side, the input side), ``server`` (MockRealtimeServer: the upgrade),
``cli`` (the process).

It serves real TCP (:meth:`MockRealtimeServer.serve`) or any trio stream
(:meth:`MockRealtimeServer.serve_stream`, e.g. a memory stream under the autojump clock): all
pacing uses ``trio.sleep_until`` on the runtime clock. As a process, for the capacity benchmark::

    python -m tests.mocks.openai_realtime --port 0 --ready FILE [--reply-ms N] [--send-rate X]

Per-append cost is one base64 decode, one table lookup and one vectorised RMS per 20 ms; the reply
audio is rendered, encoded and base64-chunked once per output format and shared by all sessions.
Not modelled: text-only output (``output_modalities: ["text"]``), out-of-band responses, MCP
tools, ``idle_timeout_ms``, the beta protocol, item insertion at ``previous_item_id``.
"""

from tests.mocks.common import SessionClosedError
from tests.mocks.openai_realtime.script import RealtimeScript, SessionLog, Truncation
from tests.mocks.openai_realtime.server import MockRealtimeServer

__all__ = ["MockRealtimeServer", "RealtimeScript", "SessionClosedError", "SessionLog", "Truncation"]
