"""HTTP webhook tools: the model's arguments and the call context go to the administrator's URL,
the response body comes back to the model.

One request per tool call with its own timeout; redirects are not followed (the URL is the one
configured, nothing else); secret headers are read from the environment per call and never
logged. Whatever goes wrong (timeout, refused connection, HTTP error, a huge body) becomes a
short JSON error for the model, so it can tell the caller, and the call goes on.

``httpx`` is the HTTP client (it runs on trio through anyio, streams responses and is the
client the pipeline's REST stages use too).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import httpx
import trio

from ..config.schema import WebhookTool
from .spec import ToolReply

log = logging.getLogger("agi_voice.webhook")

USER_AGENT = "agi-voice-webhook/1"


def _scalar(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


async def call_webhook(tool: WebhookTool, arguments: dict[str, Any], call: dict[str, Any],
                       env: Mapping[str, str] | None = None,
                       transport: httpx.AsyncBaseTransport | None = None) -> ToolReply:
    """Call ``tool`` with ``arguments`` and the ``call`` context; never raises for I/O."""
    env = os.environ if env is None else env
    headers = {"User-Agent": USER_AGENT, **dict(tool.headers)}
    for name, var in tool.headers_env:
        value = env.get(var, "")
        if not value:
            log.warning("webhook %s: environment variable %s for header %s is not set",
                        tool.name, var, name)
            continue
        headers[name] = value
    try:
        async with httpx.AsyncClient(timeout=tool.timeout, follow_redirects=False,
                                     transport=transport) as client:
            if tool.method == "GET":
                params = {k: _scalar(v) for k, v in arguments.items()}
                params["call_uuid"] = str(call.get("uuid", ""))
                req = client.build_request("GET", tool.url, params=params, headers=headers)
            else:
                body = {"tool": tool.name, "arguments": arguments, "call": call}
                req = client.build_request("POST", tool.url, json=body, headers=headers)
            data = bytearray()
            with trio.fail_after(tool.timeout * 2):  # a body that never ends
                async with client.stream(req.method, req.url, headers=req.headers,
                                         content=req.content) as resp:
                    # read to the end (an early break leaves httpx's generators unclosed);
                    # only the first max_result_bytes + 1 are kept
                    async for chunk in resp.aiter_bytes():
                        if len(data) <= tool.max_result_bytes:
                            data += chunk[:tool.max_result_bytes + 1 - len(data)]
    except trio.TooSlowError:
        log.warning("webhook %s: the answer did not end within %.1f s", tool.name,
                    tool.timeout * 2)
        return ToolReply.error(f"the {tool.name} service did not answer in time")
    except httpx.TimeoutException:
        log.warning("webhook %s: no answer within %.1f s", tool.name, tool.timeout)
        return ToolReply.error(f"the {tool.name} service did not answer in time")
    except httpx.HTTPError as exc:
        log.warning("webhook %s: %s", tool.name, type(exc).__name__)
        return ToolReply.error(f"the {tool.name} service could not be reached")
    if not 200 <= resp.status_code < 300:
        log.warning("webhook %s: HTTP %d", tool.name, resp.status_code)
        return ToolReply.error(f"the {tool.name} service answered with an error "
                               f"(HTTP {resp.status_code})")
    text = bytes(data[:tool.max_result_bytes]).decode("utf-8", "replace")
    if len(data) > tool.max_result_bytes:
        text += " [truncated]"
    try:
        json.loads(text)
        return ToolReply(text)
    except ValueError:
        return ToolReply(json.dumps({"ok": True, "result": text}))
