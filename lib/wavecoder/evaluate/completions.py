"""Benchmark generation: HF transformers (batched, left padding, greedy, stop sequences) for a
base model with or without a LoRA adapter. Samples are appended to a JSONL file as they are
produced; a rerun generates only the keys the file lacks.

A sample stores the model's raw text after the prompt: generation stops at a stop word or when
the benchmark says the code is finished (bigcode's `EndOfFunctionCriteria` with `check_fn`),
and the benchmark's reference post-processing does the cutting, as the harness does."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm


@dataclass
class GenerationRequest:
    key: str  # unique within one samples file, e.g. "humaneval|HumanEval/0|0"
    prompt: str
    stop: tuple[str, ...] = ()
    meta: dict[str, Any] | None = None
    finished: Callable[[str], bool] | None = None  # the generated text is a whole answer


def prompt_sha(prompt: str) -> str:
    return hashlib.sha256(prompt.encode()).hexdigest()[:16]


def settings_tag(settings: dict[str, Any] | None) -> str:
    """Short hash of what produced a sample (model, adapter, prompt format, token budget...)."""
    blob = json.dumps(settings or {}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def read_samples(path: Path, tag: str | None = None) -> dict[str, dict[str, Any]]:
    """Samples already written, by key (only those made with settings `tag` when given); a torn
    last line (crash mid-write) is ignored."""
    done: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return done
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if tag is None or row.get("settings") == tag:
                done[row["key"]] = row
    return done


def _append(handle, row: dict[str, Any]) -> None:
    handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    handle.flush()
    os.fsync(handle.fileno())


class _StopOnText:
    """Per-sequence stop when the decoded tail of the new tokens contains a stop sequence
    (only the last few tokens are decoded each step: cheap), or, with `finished`, when the
    whole generated text is a finished answer."""

    def __init__(
        self,
        tokenizer,
        stop: tuple[str, ...],
        prompt_len: int,
        finished: Callable[[str], bool] | None = None,
        tail: int = 12,
    ) -> None:
        self.tokenizer, self.stop, self.prompt_len, self.tail = tokenizer, stop, prompt_len, tail
        self.finished = finished

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        new = input_ids[:, self.prompt_len :]
        if self.finished is not None:
            texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
            done = [self.finished(t) for t in texts]
        else:
            tails = self.tokenizer.batch_decode(new[:, -self.tail :], skip_special_tokens=True)
            done = [any(s in t for s in self.stop) for t in tails]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class HFGenerator:
    """A causal LM (optionally with a peft adapter) that completes prompts in batches; with
    `chat=True` each prompt is a user message wrapped in the tokenizer's chat template."""

    def __init__(
        self,
        model_path: str | Path,
        adapter_path: str | Path | None = None,
        device: str = "auto",
        dtype: str = "auto",
        chat: bool = False,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if dtype == "auto":
            torch_dtype = torch.bfloat16 if device == "cuda" else torch.float32
        else:
            torch_dtype = getattr(torch, dtype)
        self.device = device
        self.chat = chat
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_path))
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=torch_dtype)
        if adapter_path is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(adapter_path))
        self.model = model.to(device).eval()

    def complete(
        self,
        prompts: list[str],
        max_new_tokens: int,
        stop: tuple[str, ...],
        finished: Callable[[str], bool] | None = None,
    ) -> list[str]:
        import torch
        from transformers import StoppingCriteriaList

        if self.chat:
            prompts = [
                self.tokenizer.apply_chat_template(
                    [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
                )
                for p in prompts
            ]
        batch = self.tokenizer(
            prompts, return_tensors="pt", padding=True, add_special_tokens=not self.chat
        ).to(self.device)
        criteria = StoppingCriteriaList()
        if stop or finished:
            criteria.append(
                _StopOnText(self.tokenizer, stop, batch["input_ids"].shape[1], finished)
            )
        with torch.inference_mode():
            out = self.model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.tokenizer.eos_token_id,  # as WaveCoder's scripts pass it
                stopping_criteria=criteria,
            )
        return [
            self._completion(batch["input_ids"][i], batch["attention_mask"][i], out[i])
            for i in range(len(prompts))
        ]

    def close(self) -> None:
        """Nothing to release: the weights go with the object (`OpenAIGenerator` has a session
        to close; both are context managers)."""

    def __enter__(self) -> HFGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _completion(self, prompt_ids, prompt_mask, sequence) -> str:
        """The text after the prompt as the harness gets it: decode prompt + generation (no
        space clean-up) and slice off the decoded prompt, so a SentencePiece tokenizer keeps
        the leading space of the first new token; the new tokens alone when that fails."""
        pad = int((prompt_mask == 0).sum())  # left padding
        n_prompt = prompt_ids.shape[0]
        options = {"skip_special_tokens": True, "clean_up_tokenization_spaces": False}
        prompt_text = self.tokenizer.decode(prompt_ids[pad:], **options)
        whole = self.tokenizer.decode(sequence[pad:], **options)
        if whole.startswith(prompt_text):
            return whole[len(prompt_text) :]
        return self.tokenizer.decode(sequence[n_prompt:], **options)


class OpenAIGenerator:
    """Any OpenAI-compatible endpoint (vLLM, llama.cpp, OpenAI) through `wavecoder.llm`: each
    prompt is one user message; answers are cached, retried and resumable like stage 02's.

    One `LLMSession` (its one endpoint under the role `ROLE`, shared settings from `llm`) serves
    every `complete` call until `close()` (or the end of a `with` block): one embedded server,
    one client, one cache handle for all of a model's benchmarks. Its event loop runs on a
    thread of its own, so `complete` stays a plain call, also inside a notebook's loop."""

    ROLE = "completion"

    def __init__(
        self,
        llm_params,
        endpoint,
        cache_path: str | Path,
        max_new_tokens: int,
        where: str | None = None,
    ) -> None:
        from wavecoder.llm import check_endpoints

        self.params = llm_params  # the shared settings: retries, timeouts, prices, budget, mode
        # greedy, the benchmark's token budget, plain text: what the cache keys are made of
        self.endpoint = endpoint.model_copy(
            update={"temperature": 0.0, "max_tokens": max_new_tokens, "json_mode": "off"}
        )
        self.cache_path = Path(cache_path)
        # a missing key is an error before any work, named by its params key (`where`)
        check_endpoints(
            self.params,
            endpoints={self.ROLE: self.endpoint},
            where={self.ROLE: where} if where else None,
        )
        self._session = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _run(self, coro):
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _open(self):
        if self._session is not None:
            return self._session
        from wavecoder.llm import LLMSession

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="openai-generator", daemon=True
        )
        self._thread.start()

        async def enter():
            session = LLMSession({self.ROLE: self.endpoint}, self.params, self.cache_path)
            return await session.__aenter__()

        try:
            self._session = self._run(enter())
        except BaseException:
            self.close()
            raise
        return self._session

    def complete(
        self,
        prompts: list[str],
        max_new_tokens: int,
        stop: tuple[str, ...],
        finished: Callable[[str], bool] | None = None,
    ) -> list[str]:
        from wavecoder.llm import chat_many

        session = self._open()
        messages = [[{"role": "user", "content": p}] for p in prompts]
        results = self._run(chat_many(session, self.ROLE, messages))
        failed = [r for r in results if not r.ok]
        if failed:
            raise RuntimeError(f"{len(failed)} request(s) failed; first: {failed[0].error}")
        return [r.text or "" for r in results]

    def close(self) -> None:
        """Stop what is still running (after an interrupt), close the session (its embedded
        server, client and cache) and the loop thread. Idempotent."""
        loop, thread, session = self._loop, self._thread, self._session
        self._loop = self._thread = self._session = None
        if loop is None:
            return

        async def shut() -> None:
            current = asyncio.current_task()
            others = [t for t in asyncio.all_tasks() if t is not current]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)
            if session is not None:
                await session.aclose()

        try:
            asyncio.run_coroutine_threadsafe(shut(), loop).result()
        finally:
            loop.call_soon_threadsafe(loop.stop)
            if thread is not None:
                thread.join()
            loop.close()

    def __enter__(self) -> OpenAIGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def generate_samples(
    generator: HFGenerator,
    requests: list[GenerationRequest],
    samples_path: str | Path,
    max_new_tokens: int = 256,
    batch_size: int = 8,
    model_tag: str = "",
    progress: bool = True,
    settings: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Complete every request, appending each sample to `samples_path` as soon as its batch
    returns; keys already in the file with the same `settings` are not generated again (a
    sample made with another model, prompt format or token budget is never reused). Returns
    samples in request order.
    """
    samples_path = Path(samples_path)
    samples_path.parent.mkdir(parents=True, exist_ok=True)
    tag = settings_tag({**(settings or {}), "max_new_tokens": max_new_tokens})
    done = read_samples(samples_path, tag)
    # a stored sample counts only for the very prompt it answered (prompts can change: a new
    # description in Explain's second pass, a fixed template)
    done = {
        r.key: done[r.key]
        for r in requests
        if r.key in done and done[r.key].get("prompt_sha") == prompt_sha(r.prompt)
    }
    todo = [r for r in requests if r.key not in done]
    # Similar lengths together: less padding per batch.
    todo.sort(key=lambda r: len(r.prompt))
    bar = tqdm(
        total=len(requests),
        initial=len(requests) - len(todo),
        desc=f"generate {model_tag}",
        disable=not progress,
    )
    with open(samples_path, "a", encoding="utf-8") as handle:
        start = 0
        while start < len(todo):
            # A batch shares its stop rule: group consecutive requests with the same one.
            stop, finished = todo[start].stop, todo[start].finished
            batch = [todo[start]]
            while (
                len(batch) < batch_size
                and start + len(batch) < len(todo)
                and (todo[start + len(batch)].stop, todo[start + len(batch)].finished)
                == (stop, finished)
            ):
                batch.append(todo[start + len(batch)])
            tick = time.perf_counter()
            if finished is None:
                texts = generator.complete([r.prompt for r in batch], max_new_tokens, stop)
            else:
                texts = generator.complete(
                    [r.prompt for r in batch], max_new_tokens, stop, finished
                )
            seconds = (time.perf_counter() - tick) / len(batch)
            for request, text in zip(batch, texts):
                row = {
                    "key": request.key,
                    "settings": tag,
                    "model": model_tag,
                    "completion": text,
                    "prompt_sha": prompt_sha(request.prompt),
                    "seconds": round(seconds, 3),
                    **(request.meta or {}),
                }
                _append(handle, row)
                done[request.key] = row
            bar.update(len(batch))
            start += len(batch)
    bar.close()
    return [done[r.key] for r in requests]
