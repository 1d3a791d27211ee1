"""The one vLLM command line for a tier, shared by the Modal deployment and local serving.

``tiers/modal_app.py`` runs it inside a Modal container and ``python -m tiers.serve`` runs it
on any GPU box, so a tier behaves the same wherever it is served:

>>> from pathlib import Path
>>> from gateway.tierspec import load_tier_specs
>>> spec = load_tier_specs(Path("config/tiers.toml"))["dev"]
>>> cmd = vllm_command(spec)
>>> cmd[:3]
['vllm', 'serve', 'Qwen/Qwen2.5-7B-Instruct']
>>> cmd[cmd.index("--structured-outputs-config.backend") + 1]
'xgrammar'

Pure: no I/O, no vLLM import. Flags are those of the vLLM version the tier pins (0.33.0);
``tests/unit/test_tiers_command.py`` feeds them to vLLM's own parser where vLLM is installed.
"""

from __future__ import annotations

import re

from gateway.tierspec import TierSpec

__all__ = [
    "GENERATION_CONFIG",
    "STRUCTURED_OUTPUTS_BACKEND",
    "TOOL_CALL_PARSER",
    "UnpinnedRevision",
    "check_pinned",
    "vllm_command",
]

# Pinned, never "auto": under auto vLLM picks a backend per request and silently falls back
# to guidance/outlines for schemas XGrammar rejects, so what constrains a request (and what
# it accepts) would drift with vLLM releases. With xgrammar pinned, an unsupported schema is
# a 400 from vLLM, which the gateway maps to a client error.
STRUCTURED_OUTPUTS_BACKEND = "xgrammar"
GENERATION_CONFIG = "vllm"  # vLLM's defaults; "auto" (its default) reads the model's file

# Tool calls: `auto` tool choice needs vLLM to pull calls out of the model's text, which takes
# a parser matched to the model's chat template. Qwen2.5 writes Hermes-style
# <tool_call>{...}</tool_call> blocks (its chat template says so), hence `hermes`. `required`
# and a named tool choice need neither flag: vLLM constrains those with the grammar backend.
TOOL_CALL_PARSER = "hermes"

_COMMIT_SHA = re.compile(r"[0-9a-f]{40}")


class UnpinnedRevision(ValueError):
    """The tier names a branch or tag (``main``) where a Hugging Face commit SHA belongs."""


def check_pinned(name: str, spec: TierSpec) -> None:
    """Refuse a moving revision: ``main`` today is not ``main`` next week, and outputs change."""
    if not _COMMIT_SHA.fullmatch(spec.revision):
        raise UnpinnedRevision(
            f"tier {name!r}: revision {spec.revision!r} is not a 40-hex commit SHA; pin one with "
            f'`python -c "from huggingface_hub import HfApi; '
            f"print(HfApi().model_info('{spec.model}').sha)\"` and put it in config/tiers.toml"
        )


def vllm_command(
    spec: TierSpec,
    *,
    host: str = "0.0.0.0",
    port: int | None = None,
    sleep_mode: bool = False,
) -> list[str]:
    """The ``vllm serve`` argv for ``spec``.

    ``sleep_mode`` adds ``--enable-sleep-mode`` for the experimental Modal GPU-snapshot path
    (the server is put to sleep before the snapshot and woken after restore).
    """
    cmd = [
        "vllm",
        "serve",
        spec.model,
        "--revision",
        spec.revision,  # the tokenizer follows: vLLM's tokenizer_revision defaults to it
        "--served-model-name",
        spec.served_model_name,
        "--host",
        host,
        "--port",
        str(spec.port if port is None else port),
        "--max-model-len",
        str(spec.max_model_len),
        "--gpu-memory-utilization",
        str(spec.gpu_memory_utilization),
        # The container never holds more than max_concurrency requests (@modal.concurrent),
        # so a larger batch is memory and warm-up spent on nothing.
        "--max-num-seqs",
        str(spec.max_concurrency),
        "--structured-outputs-config.backend",
        STRUCTURED_OUTPUTS_BACKEND,
        # vLLM's own sampling defaults, not the model's generation_config.json (Qwen2.5's sets
        # top_k=20, repetition_penalty=1.05): a request's temperature/top_p then mean what the
        # gateway and the embedded tier mean by them, and a repetition penalty never pushes a
        # constrained decoder off a JSON key it must repeat.
        "--generation-config",
        GENERATION_CONFIG,
        "--enable-auto-tool-choice",
        "--tool-call-parser",
        TOOL_CALL_PARSER,
    ]
    if spec.fast_boot:
        # No torch.compile and no CUDA graphs: boots in weights + init time, decodes slower.
        cmd.append("--enforce-eager")
    else:
        # Capture graphs only up to the batch the container can see; vLLM's default list runs
        # to 512 and every size is capture time on a cold start (46 s on the 32B).
        cmd += ["--max-cudagraph-capture-size", str(spec.max_concurrency)]
    if sleep_mode:
        cmd.append("--enable-sleep-mode")
    return cmd
