"""LLM access for every role: configuration (config), bookkeeping (cache, stats, ledger), the two ways
to send (online, batch) and the client over them (client.LLM)."""

from ..failures import TooManyFailures
from .bookkeeping import Completion, LLMFailure, OfflineMiss, Stats, TeacherChanged
from .breaker import CircuitOpen
from .cache import ResponseCache, request_key
from .client import LLM
from .config import BUILTIN_SCHEME, Endpoint, Role
from .ledger import BudgetExceeded, Ledger, Price
from .online import make_client

__all__ = ["BUILTIN_SCHEME", "LLM", "BudgetExceeded", "CircuitOpen", "Completion", "Endpoint", "LLMFailure", "Ledger", "OfflineMiss",
           "Price", "ResponseCache", "Role", "Stats", "TeacherChanged", "TooManyFailures", "make_client", "request_key"]
