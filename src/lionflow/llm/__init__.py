"""LLM access for the teacher, referee and generator roles: client, cache, limits, ledger, batch mode."""

from .cache import ResponseCache, request_key
from .client import (BUILTIN_ORACLE, LLM, Completion, Endpoint, LLMFailure, Role, Stats, TooManyFailures,
                     make_client)
from .ledger import BudgetExceeded, Ledger, Price

__all__ = ["BUILTIN_ORACLE", "LLM", "BudgetExceeded", "Completion", "Endpoint", "LLMFailure", "Ledger", "Price",
           "ResponseCache", "Role", "Stats", "TooManyFailures", "make_client", "request_key"]
