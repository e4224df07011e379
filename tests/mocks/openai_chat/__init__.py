"""A mock of OpenAI Chat Completions (``POST /v1/chat/completions``, ``GET /v1/models``),
written from reference/providers.md 5.1 (and 6.2 for OpenAI-compatible servers).

Modelled:

* auth ``Authorization: Bearer <key>``, else 401 ``invalid_api_key`` with OpenAI's error object
  ``{"error": {"message", "type", "param", "code"}}``; an unknown path is 404 ``Invalid URL``;
* the body checks the API makes, in its words: ``model`` string, ``messages`` non-empty with
  roles system / developer / user / assistant / tool, assistant ``tool_calls`` with string
  ``arguments``, every tool message answering a pending call of the preceding assistant message
  and every call answered (else 400, also recorded in the ChatLog's problems), ``tools`` of type
  function with a valid name, ``stream_options`` only with ``stream``; for o-series and gpt-5
  models ``max_tokens`` and a temperature other than 1 are refused as the API refuses them;
* ``stream: true``: ``text/event-stream``, ``data: <json>\\n\\n`` events, ids ``chatcmpl-<n>``: a
  role chunk (``content: ""``) at once, one content delta per word (leading spaces kept) paced by
  ``first_token_delay`` / ``token_delay`` from the request's arrival, tool calls in OpenAI's
  fragments (header delta with ``arguments: ""``, then pieces; a turn with no text carries the
  role on its first tool delta) or whole (one delta per call), a finish chunk with an empty delta
  and ``finish_reason`` stop | tool_calls, a usage chunk (``choices: []``) only with
  ``stream_options.include_usage``, then ``data: [DONE]``;
* ``stream: false``: one ``chat.completion`` object when the stream would have ended;
* faults: ``reject_status``, ``fail_request`` (HTTP 500), ``disconnect_request`` (connection
  dropped mid-stream, no terminating chunk), ``error_event_request``
  (``data: {"error": {...}}``, then the stream ends without ``[DONE]``).

Not modelled: ``n`` > 1, logprobs, ``max_tokens`` truncation, refusals, audio / image content,
``tool_choice`` (recorded in params, not obeyed), rate-limit headers, real token counts.

In tests use :func:`tests.mocks.http.open_memory_transport` with ``{"api.openai.com": server}``;
as a process::

    python -m tests.mocks.openai_chat --port 0 --ready FILE [--api-key K] [--style whole]
"""

from __future__ import annotations

from .base import ChatServer
from .completions import OLLAMA_V1, OPENAI, ChatCompletions, Flavor
from .script import ChatLog, ChatScript, Reply, ToolCall
from .server import MockChatServer

__all__ = [
    "OLLAMA_V1",
    "OPENAI",
    "ChatCompletions",
    "ChatLog",
    "ChatScript",
    "ChatServer",
    "Flavor",
    "MockChatServer",
    "Reply",
    "ToolCall",
]
