"""LLM access for the teacher, referee and generator roles: client, cache, limits, ledger, batch mode."""

from ..failures import TooManyFailures
from .cache import ResponseCache, request_key
from .client import (
                     BUILTIN_SCHEME,
                     LLM,
                     Completion,
                     Endpoint,
                     LLMFailure,
                     OfflineMiss,
                     Role,
                     Stats,
                     TeacherChanged,
                     make_client,
)
from .ledger import BudgetExceeded, Ledger, Price

__all__ = ["BUILTIN_SCHEME", "LLM", "BudgetExceeded", "Completion", "Endpoint", "LLMFailure", "Ledger", "OfflineMiss",
           "Price", "ResponseCache", "Role", "Stats", "TeacherChanged", "TooManyFailures", "make_client", "request_key"]
