"""A GGUF model in-process with llama-cpp-python (the optional ``llama`` extra; CI does not
build it). ``llm: {engine: llama_cpp, model_path: /models/x.gguf}``.

The model is loaded once per process and file (seconds, and its RAM); generation runs in a
worker thread and streams OpenAI-shaped chunks back to the call through a channel, so the
event loop never waits on it. One generation at a time per model (llama.cpp contexts are not
shared between threads); a cancelled turn stops its generation at the next token.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator
from typing import Any

import trio

from ..config.schema import LlmConfig
from ..tools.spec import ToolSpec
from .base import LlmDone, LlmEvent, ProviderError, TextDelta, ToolCall
from .llm_openai import tool_schema

_MODELS: dict[str, tuple[Any, threading.Lock]] = {}
_LOAD_LOCK = threading.Lock()
INSTALL_HINT = "pip install 'agi-voice[llama]' (builds llama-cpp-python)"


def load_model(path: str, n_ctx: int = 4096) -> tuple[Any, threading.Lock]:
    """The loaded model for ``path`` (blocking; call from a worker thread)."""
    with _LOAD_LOCK:
        if path in _MODELS:
            return _MODELS[path]
        try:
            from llama_cpp import Llama  # type: ignore[import-not-found]
        except ImportError as exc:
            raise ProviderError(f"llama-cpp-python is not installed ({exc}); {INSTALL_HINT}",
                                retryable=False) from None
        try:
            model = Llama(model_path=path, n_ctx=n_ctx, verbose=False,
                          chat_format="chatml-function-calling")
        except (ValueError, OSError) as exc:
            raise ProviderError(f"cannot load {path}: {exc}", retryable=False) from None
        _MODELS[path] = (model, threading.Lock())
        return _MODELS[path]


class LlamaCppChat:
    """Implements :class:`~media_sidecar.pipeline.base.ChatModel` for ``engine: llama_cpp``."""

    name = "llama_cpp"

    def __init__(self, cfg: LlmConfig) -> None:
        if not cfg.model_path:
            raise ProviderError("llm.model_path (a GGUF file) is required", retryable=False)
        self.cfg = cfg

    async def stream(self, messages: list[dict[str, Any]], tools: list[ToolSpec]
                     ) -> AsyncIterator[LlmEvent]:
        send, recv = trio.open_memory_channel[dict[str, Any] | BaseException | None](64)
        stop = threading.Event()
        token = trio.lowlevel.current_trio_token()

        def put(item: dict[str, Any] | BaseException | None) -> None:
            trio.from_thread.run(send.send, item, trio_token=token)

        def generate() -> None:
            try:
                model, lock = load_model(self.cfg.model_path)
                with lock:
                    chunks = model.create_chat_completion(
                        messages=messages, tools=tool_schema(tools) or None, stream=True,
                        temperature=self.cfg.temperature, max_tokens=self.cfg.max_tokens)
                    for chunk in chunks:
                        if stop.is_set():
                            return
                        put(chunk)
                put(None)
            except (trio.Cancelled, trio.RunFinishedError, trio.BrokenResourceError):
                return  # the turn or the call ended first
            except Exception as exc:  # noqa: BLE001 - model errors are this call's failure
                try:
                    put(exc if isinstance(exc, ProviderError)
                        else ProviderError(f"llama.cpp failed: {exc}", retryable=True))
                except (trio.Cancelled, trio.RunFinishedError, trio.BrokenResourceError):
                    pass

        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: trio.to_thread.run_sync(generate, abandon_on_cancel=True))
            try:
                calls: dict[int, dict[str, Any]] = {}
                finish = "stop"
                async for item in recv:
                    if item is None:
                        break
                    if isinstance(item, BaseException):
                        raise item
                    for choice in item.get("choices") or ():
                        delta = choice.get("delta") or {}
                        if delta.get("content"):
                            yield TextDelta(delta["content"])
                        for tc in delta.get("tool_calls") or ():
                            part = calls.setdefault(int(tc.get("index", 0)),
                                                    {"id": "", "name": "", "args": ""})
                            fn = tc.get("function") or {}
                            part["id"] = tc.get("id") or part["id"]
                            part["name"] = fn.get("name") or part["name"]
                            args = fn.get("arguments") or ""
                            part["args"] += args if isinstance(args, str) else json.dumps(args)
                        finish = choice.get("finish_reason") or finish
                for i, part in sorted(calls.items()):
                    if part["name"]:
                        yield ToolCall(part["id"] or f"call_{i}", part["name"],
                                       part["args"] or "{}")
                yield LlmDone(finish)
            finally:
                stop.set()
                nursery.cancel_scope.cancel()
