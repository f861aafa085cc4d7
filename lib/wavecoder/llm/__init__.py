"""The LLM layer shared by stages 02 and 04: any OpenAI-compatible endpoint through the official
async `openai` client, or an embedded llama.cpp server started and stopped here.

What it guarantees (the paper's released code did none of it):
- bounded retries with exponential backoff and jitter on 429 (Retry-After honoured), 5xx,
  timeouts, dropped connections and malformed bodies; a call that still fails is returned as a
  failed result with its reason, never raised and never retried forever;
- a persistent response cache keyed by a hash of (model, messages, generation settings,
  template version), appended (and fsynced) as each answer arrives: after a `kill -9` a rerun
  repeats at most the calls that were in flight;
- token usage from the API's `usage`, cost from the params' price table, an optional budget cap
  that stops issuing new calls;
- API keys only from environment variables, checked before any work, never logged;
- `llm.mode: batch`: a round's calls go out as one batch job per endpoint (OpenAI Batch API or
  a local command such as vLLM's `run_batch`), resumable after a kill (`llm.batch`).

The modules: `endpoints` (keys, GGUF files, JSON mode, checks before any work), `server` (the
embedded llama.cpp process), `cache` (the response cache), `session` (`LLMSession`: named
endpoints with shared settings; results, stats, prices, retries), `batch` (batch mode).
"""

from wavecoder.llm.cache import ResponseCache, cache_key
from wavecoder.llm.endpoints import (
    DEFAULT_GGUF_PACKAGE,
    ROLES,
    LLMConfigError,
    check_endpoints,
    default_gguf,
    gguf_for,
    json_mode_of,
    needs_key,
    resolve_api_key,
    response_format,
    stage02_endpoints,
)
from wavecoder.llm.server import (
    PARENT_PID_ENV,
    EmbeddedServer,
    exit_when_orphaned,
    free_port,
    serve_llama_cpp,
)
from wavecoder.llm.session import (
    CallStats,
    ChatResult,
    LLMSession,
    MalformedResponse,
    chat_many,
    price_of,
    retry_after_seconds,
    run_sync,
)

__all__ = [
    "DEFAULT_GGUF_PACKAGE",
    "PARENT_PID_ENV",
    "ROLES",
    "CallStats",
    "ChatResult",
    "EmbeddedServer",
    "LLMConfigError",
    "LLMSession",
    "MalformedResponse",
    "ResponseCache",
    "cache_key",
    "chat_many",
    "check_endpoints",
    "default_gguf",
    "exit_when_orphaned",
    "free_port",
    "gguf_for",
    "json_mode_of",
    "needs_key",
    "price_of",
    "resolve_api_key",
    "response_format",
    "retry_after_seconds",
    "run_sync",
    "serve_llama_cpp",
    "stage02_endpoints",
]
