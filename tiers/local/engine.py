"""The model and its generation loop: SmolLM2 under transformers, constrained by XGrammar.

>>> engine = Engine.load(folder, threads=1)
>>> job = engine.prepare(messages, GrammarRequest.json_schema(schema_json))
>>> done = engine.generate(job, Sampling(max_tokens=64, temperature=0.0), threading.Event())
>>> done.text, done.finish_reason
('{"name": ...}', 'stop')

The loop is written out (rather than ``model.generate``) because the server needs, per
token: the grammar's bitmask, seeded sampling, stop strings, and a cancel check so a client
that went away stops costing CPU. One request runs at a time (see ``scheduler``); this
module imports torch, so only the loader thread imports it.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import xgrammar as xgr
from transformers import AutoModelForCausalLM, AutoTokenizer

from tiers.local.jobs import (
    Completion,
    GenerationCancelled,
    GrammarError,
    GrammarRequest,
    Prepared,
    Sampling,
)

# vLLM treats temperatures below this as greedy; so do we.
GREEDY_BELOW = 1e-5


class Engine:
    def __init__(self, model: Any, tokenizer: Any, compiler: xgr.GrammarCompiler) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.compiler = compiler
        self.vocab_size: int = model.config.vocab_size
        self.stop_ids = frozenset(_stop_token_ids(model, tokenizer))

    @classmethod
    def load(cls, folder: Path, *, threads: int) -> Engine:
        torch.set_num_threads(threads)
        model: Any = AutoModelForCausalLM.from_pretrained(
            folder, dtype=torch.float32, local_files_only=True
        )
        model.eval()
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        info = xgr.TokenizerInfo.from_huggingface(
            tokenizer,
            vocab_size=model.config.vocab_size,
            stop_token_ids=sorted(_stop_token_ids(model, tokenizer)),
        )
        return cls(model, tokenizer, xgr.GrammarCompiler(info, max_threads=threads))

    def prepare(self, messages: list[dict[str, str]], grammar: GrammarRequest | None) -> Prepared:
        """Tokenize the chat and compile the grammar; raises ``GrammarError`` for a bad schema.

        Thread-safe, so the server runs it outside the generation queue: a bad schema is a
        400 at once, not after waiting behind other requests.
        """
        prompt_ids = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=False
        )
        return Prepared(list(prompt_ids), self._compile(grammar) if grammar else None)

    def _compile(self, grammar: GrammarRequest) -> xgr.CompiledGrammar:
        if grammar.kind == "json_object":
            # OpenAI's json_object promises an object; xgrammar's builtin JSON grammar would
            # also allow a bare array or number. strict_mode=False lets any keys in.
            return self.compiler.compile_json_schema(
                '{"type": "object"}', any_whitespace=False, strict_mode=False
            )
        try:
            # Compact JSON (no free whitespace): a 135M model given free whitespace can
            # spend its whole budget on newlines; the parsed value is the same.
            return self.compiler.compile_json_schema(grammar.schema, any_whitespace=False)
        except RuntimeError as exc:  # xgrammar raises RuntimeError for every schema problem
            raise GrammarError(_xgrammar_reason(exc)) from exc

    def generate(
        self,
        job: Prepared,
        sampling: Sampling,
        cancel: threading.Event,
        on_text: Callable[[str], None] | None = None,
    ) -> Completion:
        """Run the job to its end. ``on_text`` (streaming) is called, on this thread, with
        each piece of text as soon as it is final: a piece that may yet turn out to start a
        stop string, or that ends inside a multi-byte character, is held back until it is
        settled. The pieces joined are a prefix of ``Completion.text``; the caller sends the
        rest once it returns."""
        started = time.perf_counter()
        holdback = max((len(s) for s in sampling.stop), default=1) - 1
        shown = 0
        seed = sampling.seed if sampling.seed is not None else random.getrandbits(63)
        generator = torch.Generator().manual_seed(seed)
        matcher = xgr.GrammarMatcher(job.grammar) if job.grammar else None
        bitmask = xgr.allocate_token_bitmask(1, self.vocab_size) if matcher else None
        suppress_eos = sampling.ignore_eos and matcher is None
        eos = torch.tensor(sorted(self.stop_ids))

        out: list[int] = []
        finish, stop_reason, text = "length", None, None
        inputs = torch.tensor([job.prompt_ids])
        cache = None
        with torch.inference_mode():
            for _ in range(sampling.max_tokens):
                if cancel.is_set():
                    raise GenerationCancelled(len(out), time.perf_counter() - started)
                result = self.model(input_ids=inputs, cache=cache, use_cache=True, logits_to_keep=1)
                cache = result.cache
                logits = result.logits[:, -1, :].float()
                if matcher is not None and bitmask is not None:
                    matcher.fill_next_token_bitmask(bitmask)
                    xgr.apply_token_bitmask_inplace(logits, bitmask)
                if suppress_eos:
                    logits[0, eos] = float("-inf")
                token = _sample(logits[0], sampling, generator)
                out.append(token)
                if matcher is not None and not matcher.accept_token(token):
                    raise RuntimeError(f"grammar rejected token {token} it allowed")
                if token in self.stop_ids and not suppress_eos:
                    finish = "stop"
                    break
                if sampling.stop and (hit := self._stop_string(out, sampling.stop)):
                    finish, (text, stop_reason) = "stop", hit
                    break
                if on_text is not None:
                    so_far = self.tokenizer.decode(out, skip_special_tokens=True)
                    settled = len(so_far.rstrip("\ufffd")) - holdback
                    if settled > shown:
                        on_text(so_far[shown:settled])
                        shown = settled
                inputs = torch.tensor([[token]])
        if text is None:
            text = self.tokenizer.decode(out, skip_special_tokens=True)
        return Completion(
            text, finish, stop_reason, len(job.prompt_ids), len(out), time.perf_counter() - started
        )

    def _stop_string(self, out: list[int], stops: tuple[str, ...]) -> tuple[str, str] | None:
        """(text before the stop string, the stop string) once any stop string appears."""
        text = self.tokenizer.decode(out, skip_special_tokens=True)
        hits = [(text.find(s), s) for s in stops if s and s in text]
        if not hits:
            return None
        at, stop = min(hits)
        return text[:at], stop


def _stop_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """End-of-turn tokens: the generation config's EOS ids and the tokenizer's EOS."""
    ids: set[int] = set()
    for source in (model.generation_config.eos_token_id, tokenizer.eos_token_id):
        if isinstance(source, int):
            ids.add(source)
        elif source:
            ids.update(int(i) for i in source)
    return ids


def _sample(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator) -> int:
    if sampling.temperature < GREEDY_BELOW:
        return int(torch.argmax(logits))
    logits = logits / sampling.temperature
    if sampling.top_p < 1.0:
        ordered, order = torch.sort(logits, descending=True)
        cumulative = torch.softmax(ordered, dim=-1).cumsum(dim=-1)
        # Drop a token once the ones before it already cover top_p (the first always stays).
        drop = cumulative - torch.softmax(ordered, dim=-1) >= sampling.top_p
        logits = logits.scatter(0, order[drop], float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


def _xgrammar_reason(exc: RuntimeError) -> str:
    """xgrammar's message without its C++ log prefix (``[07:18:39] /path/file.cc:4944: ``)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return _LOG_PREFIX.sub("", lines[-1]) if lines else "the schema cannot be compiled"


_LOG_PREFIX = re.compile(r"^\[[\d:.]+\]\s+\S+:\d+:\s*")
