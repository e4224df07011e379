"""A mock of Ollama's HTTP API, written from reference/providers.md 6 (no auth).

Modelled:

* ``POST /api/chat``: ``application/x-ndjson``, one JSON object per line, ``message.content``
  deltas (one per word, paced by the script's ``first_token_delay`` / ``token_delay``), each tool
  call whole in one line with ``id``, ``function.index`` and ``arguments`` as a JSON object, then
  the ``done: true`` line with ``done_reason: "stop"`` and metrics in nanoseconds; ``stream``
  defaults to true, ``stream: false`` answers one ``application/json`` object; no messages at all
  answers ``done_reason: "load"``;
* body checks as Ollama's decoder words them (400 ``{"error": ...}``): ``model`` required, string
  ``content``, tool-call ``arguments`` an object (an OpenAI-style string is refused), tools with a
  ``function.name``; a tool result (``tool_name`` or ``tool_call_id``) naming no earlier call is
  accepted and recorded as a problem; an unknown model is 404
  ``model "x" not found, try pulling it first``;
* faults: ``reject_status``, ``fail_request`` (500), ``error_event_request`` (an NDJSON line
  ``{"error": ...}``, status 200), ``disconnect_request`` (connection dropped);
* ``GET /api/tags``, ``GET /api/version``, ``GET /`` ("Ollama is running");
* ``/v1/chat/completions`` and ``/v1/models``: the Chat Completions mock in Ollama's flavour
  (whole tool calls, ``system_fingerprint: "fp_ollama"``, no auth, unknown model 404
  ``not_found_error``, 5xx ``api_error``, tool ids not cross-checked).

Both chat routes share the request numbering and ``server.chats``. Not modelled: ``thinking``,
``format`` (structured output), images, ``/api/generate``, embeddings, pulls, real metrics.

As a process::

    python -m tests.mocks.ollama --port 0 --ready FILE [--model qwen3]
"""

from __future__ import annotations

from .native import NDJSON
from .server import VERSION, MockOllamaServer

__all__ = ["NDJSON", "VERSION", "MockOllamaServer"]
