"""A mock of OpenAI's audio REST endpoints, written from reference/providers.md 5.2 and 5.3.

Modelled:

* auth: ``Authorization: Bearer <key>``, else 401 ``invalid_api_key``; an unknown path or method
  is 404 ``Invalid URL (METHOD /path)``; a scripted status refuses every request;
* ``POST /v1/audio/speech`` (JSON): model, input (<= 4096 chars), voice (name or ``{"id"}``),
  instructions (not with tts-1*), response_format, speed 0.25-4.0, stream_format (``sse`` not
  with tts-1*), each refused with a 400 error body naming the ``param``. ``pcm`` is raw 24 kHz
  s16le mono, ``wav`` the same behind a 44-byte header: a tone of ``ms_per_char`` x len(input) /
  speed (or scripted PCM), sent chunked, the first chunk after ``first_byte_delay`` and the rest
  paced at ``send_rate`` x real time. mp3/opus/aac/flac get a few opaque bytes with their
  content type (not rendered). ``stream_format: "sse"`` sends ``speech.audio.delta`` /
  ``speech.audio.done`` events (unverified names, per the reference);
* ``POST /v1/audio/transcriptions`` (multipart/form-data): file (by extension), model,
  response_format per model (gpt-*: json, text; whisper-1 also srt, vtt, verbose_json; the
  diarize model diarized_json), temperature 0-1, stream (SSE ``transcript.text.delta`` per word,
  then ``transcript.text.done``; ignored for whisper-1 as documented). WAV files are parsed (PCM
  16-bit, mu-law, A-law; any rate and channels) and measured (duration, RMS): malformed is 400,
  under 0.1 s is 400 ``audio_too_short``, silence (RMS < ``vad_rms``) is ``""``. Other formats
  are not decoded. Transcripts are scripted, in order. Usage: tokens (the mock's estimate) or
  whisper-1's duration;
* faults: 500 ``server_error`` or a dropped connection halfway through the body, on the n-th
  request of an endpoint.

Not modelled: real synthesis or recognition, compressed audio, rate-limit headers, the
``include[]`` / ``timestamp_granularities[]`` / ``chunking_strategy`` options (accepted,
ignored), translations.

Serve it over TCP (:meth:`MockAudioServer.serve`) or to an ``httpx.AsyncClient`` through
:func:`tests.mocks.http.open_memory_transport` in virtual time; as a process see ``__main__``.
"""

from __future__ import annotations

from .script import ApiError, AudioScript, RequestLog, SpeechLog, TranscriptionLog
from .server import MockAudioServer

__all__ = ["ApiError", "AudioScript", "MockAudioServer", "RequestLog", "SpeechLog",
           "TranscriptionLog"]
