"""The OpenAI Chat Completions mock server: the OpenAI flavour of :class:`ChatCompletions`."""

from __future__ import annotations

from tests.mocks.http import HttpRequest, HttpResponse

from .base import ChatServer
from .completions import OPENAI, ChatCompletions
from .script import ChatScript

__all__ = ["MockChatServer"]


class MockChatServer(ChatServer):
    """Serves ``POST /v1/chat/completions`` and ``GET /v1/models`` as api.openai.com does, with
    ``Authorization: Bearer <api_key>`` (``api_key`` None disables auth); one ChatLog per chat
    request in ``chats``."""

    def __init__(self, api_key: str | None = "test-key", *,
                 script: ChatScript | None = None) -> None:
        super().__init__(script)
        self.api_key = api_key
        self.completions = ChatCompletions(self, OPENAI, api_key)

    async def handle(self, request: HttpRequest) -> HttpResponse:
        """Every path goes to the OpenAI routes (an unknown one is 404 ``Invalid URL``)."""
        return await self.completions.handle(request)
