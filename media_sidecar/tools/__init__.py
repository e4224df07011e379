"""Function-calling tools shared by every model-driven assistant (speech-to-speech providers
and, later, the LLM brain): their JSON-schema declarations and the HTTP webhook client."""

from .spec import ToolCallError, ToolReply, ToolSpec, build_specs, parse_arguments

__all__ = ["ToolCallError", "ToolReply", "ToolSpec", "build_specs", "parse_arguments"]
