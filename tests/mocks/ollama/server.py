"""The Ollama mock server: native ``/api/*`` routes and the OpenAI-compatible ``/v1`` routes
(the Chat Completions mock's code in its Ollama flavour), one ChatLog list for both."""

from __future__ import annotations

from typing import Any

from tests.mocks.http import HttpRequest, HttpResponse, json_response
from tests.mocks.openai_chat import OLLAMA_V1, ChatCompletions, ChatScript, ChatServer

from .native import OllamaRequestError, answer_chat, parse_ollama_chat

__all__ = ["VERSION", "MockOllamaServer"]

VERSION = "0.12.6"
"""What ``GET /api/version`` reports."""
DEFAULT_MODEL = "qwen3"


class MockOllamaServer(ChatServer):
    """Serves ``POST /api/chat``, ``GET /api/tags``, ``GET /api/version``, ``GET /`` and the
    ``/v1`` chat and models routes, without auth. Models other than the script's ``model`` and
    ``models`` (with or without ``:latest``) are 404. The default script's model is qwen3."""

    def __init__(self, *, script: ChatScript | None = None) -> None:
        super().__init__(script if script is not None else ChatScript(model=DEFAULT_MODEL))
        self.v1 = ChatCompletions(self, OLLAMA_V1, api_key=None)

    async def handle(self, request: HttpRequest) -> HttpResponse:
        """Route; an unknown path is Go's plain-text ``404 page not found``."""
        if self.v1.handles(request):
            return await self.v1.handle(request)
        path, method = request.path.rstrip("/") or "/", request.method
        if method == "POST" and path == "/api/chat":
            return await self._chat(request)
        status = self.script.reject_status
        if status is not None:
            return json_response(status, {"error": f"scripted refusal with HTTP {status}"})
        if method == "GET" and path == "/api/tags":
            return json_response(200, {"models": [_tag(m) for m in self.model_names()]})
        if method == "GET" and path == "/api/version":
            return json_response(200, {"version": VERSION})
        if method in ("GET", "HEAD") and path == "/":
            return HttpResponse(200, [("Content-Type", "text/plain; charset=utf-8")],
                                b"Ollama is running")
        return HttpResponse(404, [("Content-Type", "text/plain")], b"404 page not found")

    def model_names(self) -> list[str]:
        """The installed models as /api/tags names them (``name:tag``)."""
        return [m if ":" in m else f"{m}:latest" for m in (self.script.model, *self.script.models)]

    async def _chat(self, request: HttpRequest) -> HttpResponse:
        log = self.new_chat(request)
        script = self.script
        if script.reject_status is not None:
            return _error(log, script.reject_status,
                          f"scripted refusal with HTTP {script.reject_status}")
        if script.fail_request == log.n:
            return _error(log, 500, "llama runner process has terminated: exit status 2 "
                                    "(scripted)")
        try:
            try:
                body = request.json() if request.body else None
            except ValueError as exc:
                raise OllamaRequestError(f"invalid character in request body: {exc}") from exc
            chat = parse_ollama_chat(body, log.problems)
        except OllamaRequestError as exc:
            log.problems.append(f"refused: {exc.message}")
            return _error(log, exc.status, exc.message)
        log.model, log.messages, log.tools = chat.model, chat.messages, chat.tools
        log.stream, log.params = chat.stream, chat.params
        name = chat.model if ":" in chat.model else f"{chat.model}:latest"
        if name not in self.model_names():
            return _error(log, 404, f'model "{chat.model}" not found, try pulling it first')
        return await answer_chat(self, log, chat)


def _error(log: Any, status: int, message: str) -> HttpResponse:
    log.status, log.error = status, message
    return json_response(status, {"error": message})


def _tag(name: str) -> dict[str, Any]:
    family = name.split(":")[0]
    return {"name": name, "model": name, "modified_at": "2026-01-01T10:00:00.000000000Z",
            "size": 5_225_388_164, "digest": "0" * 64,
            "details": {"parent_model": "", "format": "gguf", "family": family,
                        "families": [family], "parameter_size": "8.2B",
                        "quantization_level": "Q4_K_M"}}
