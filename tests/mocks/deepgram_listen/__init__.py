"""A mock of Deepgram's streaming speech-to-text WebSocket (``/v1/listen``), written from
reference/providers.md section 3 and Deepgram's asyncapi spec.

Modelled:

* the upgrade: ``Authorization: Token <key>`` / ``Bearer <key>`` or ``Sec-WebSocket-Protocol:
  token, <key>``, else 401 INVALID_AUTH; another path 404; a scripted status refuses every
  upgrade; a query outside the spec is 400 INVALID_QUERY_PARAMETER with ``dg-error`` (see
  :func:`~.wire.parse_query`: raw audio needs ``encoding`` and ``sample_rate``,
  ``utterance_end_ms`` needs ``interim_results=true`` and is at least 1000). Refusals carry
  Deepgram's JSON body ``{"err_code", "err_msg", "request_id"}`` and ``dg-request-id``;
* binary audio (mulaw, alaw, linear16, linear32; interleaved channels are one stream) through
  an energy VAD on 20 ms frames, which is the mock's audio clock: every time in a message is
  seconds of audio received. The n-th stretch of speech is ``script.transcripts[n-1]``;
* ``SpeechStarted`` (``vad_events``) with the audio time of the first loud frame; interim
  ``Results`` (``interim_results``) every ``interim_ms`` of audio with a growing word prefix;
  the final ``Results`` (``is_final``, ``speech_final`` true) once the quiet audio reaches
  ``endpointing`` ms, sent ``final_delay`` s later; with ``endpointing=false`` a segment ends
  after ``segment_ms`` of quiet with ``speech_final`` false; words spread evenly over the
  speech, ``punctuated_word`` only with ``punctuate`` / ``smart_format``; ``UtteranceEnd``
  once ``utterance_end_ms`` of audio passed after the last word of the latest final;
* client messages: ``KeepAlive``, ``Finalize`` (the utterance in progress, if any, is
  finalized: ``is_final`` true, ``speech_final`` false, ``from_finalize`` true; nothing is sent
  when no speech is in progress), ``CloseStream`` (the utterance in progress finalized, pending
  finals sent, ``Metadata``, close 1000; an empty binary frame, the deprecated form, does the
  same and is recorded as a problem), ``Configure`` (SDK 7.17: ``ConfigureSuccess``);
* close codes: 1011 ``NET-0001`` after ``idle_timeout`` without any client frame (audio or
  text), 1008 ``DATA-0000`` for a text frame that is not a JSON object with a known ``type``
  (the mock is strict; the live service's handling is undocumented);
* scripted faults: ``reject_with_status``, ``close_after_utterances`` (1011 ``NET-0000``),
  ``disconnect_after_utterances`` (no close frame: 1006).

Not modelled: empty-transcript Results for silence, multichannel results, diarization,
entities, keyterm effects (recorded only), the undecodable-audio close (encodings it cannot
decode are counted, not transcribed).

As a process::

    python -m tests.mocks.deepgram_listen --port 0 --ready FILE --api-key K [--final-delay S]
"""

from __future__ import annotations

from .script import ListenLog, ListenScript, SessionClosedError, Utterance
from .server import PATH, MockListenServer
from .wire import ListenParams

__all__ = [
    "PATH",
    "ListenLog",
    "ListenParams",
    "ListenScript",
    "MockListenServer",
    "SessionClosedError",
    "Utterance",
]
