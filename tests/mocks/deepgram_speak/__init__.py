"""Mocks of Deepgram's TTS (``/v1/speak``): the streaming WebSocket (:class:`MockSpeakServer`,
providers.md 4.2 and the asyncapi spec) and the REST fallback (:class:`MockSpeakRestServer`,
providers.md 4.1 and the openapi spec), sharing one script and one rendering.

WebSocket, modelled:

* the upgrade as the listen mock's (Token / Bearer / subprotocol auth, 401, 404, scripted
  status) plus the query: ``model`` (default aura-asteria-en), ``encoding`` linear16 (default) /
  mulaw / alaw, ``sample_rate`` (default 24000 for linear16, 8000 for mulaw / alaw; linear16
  takes 8000-48000, the G.711 encodings 8000 / 16000), ``speed`` (positive; divides the audio
  length); anything else is HTTP 400 INVALID_QUERY_PARAMETER with ``dg-error``;
* ``Metadata`` first; ``Speak`` buffers text; ``Flush`` queues the buffer: after
  ``first_byte_delay`` from the Flush (and after the flush before it), binary frames of
  ``chunk_ms`` paced at ``send_rate``, then ``Flushed {sequence_id}``, the flush's index from 0;
  an empty flush gets its Flushed at once. A tone of ``ms_per_char`` per character (at least
  ``min_ms``), or ``script.pcm16``;
* ``Clear``: the buffer and queued flushes dropped, the playing flush cut between frames (no
  Flushed for it), then ``Cleared {sequence_id}`` = the number of Flushes so far (providers.md's
  transcript: Flushed 0, then Cleared 1);
* ``Close``: the buffer flushed, the queue spoken out, close 1000;
* more than ``flush_limit`` (20) Flushes in ``flush_window`` (60 s): ``Warning`` (code
  FLUSH_LIMIT_EXCEEDED, the mock's own) and that Flush is ignored, its text kept buffered;
* errors close the socket, as the docs say (the asyncapi copy has no Error message): a text
  frame that is not a JSON object with a known ``type``, or a Speak without a string ``text``:
  1008 ``DATA-0000``; a binary frame: 1003 ``MESSAGE-0000``; ``idle_timeout`` (off by
  default) without client messages: 1011 ``NET-0001``;
* faults: ``reject_with_status``, ``disconnect_on_flush`` (no close frame halfway through the
  n-th flush's audio).

REST: see :class:`~.rest.MockSpeakRestServer`.

As a process (``--rest-port`` adds the REST mock)::

    python -m tests.mocks.deepgram_speak --port 0 --ready FILE --api-key K [--rest-port 0]
"""

from __future__ import annotations

from .audio import SpeakParams, speech_ms
from .rest import MockSpeakRestServer
from .script import ClearRecord, FlushRecord, RestSpeech, SessionClosedError, SpeakLog, SpeakScript
from .server import PATH, MockSpeakServer

__all__ = [
    "PATH",
    "ClearRecord",
    "FlushRecord",
    "MockSpeakRestServer",
    "MockSpeakServer",
    "RestSpeech",
    "SessionClosedError",
    "SpeakLog",
    "SpeakParams",
    "SpeakScript",
    "speech_ms",
]
