"""LLM access for the teacher, referee and generator roles: client, persistent cache."""

from .cache import ResponseCache, request_key
from .client import BUILTIN_ORACLE, LLM, Completion, Endpoint, LLMFailure, Role, Stats, make_client

__all__ = ["BUILTIN_ORACLE", "LLM", "Completion", "Endpoint", "LLMFailure", "ResponseCache", "Role", "Stats",
           "make_client", "request_key"]
