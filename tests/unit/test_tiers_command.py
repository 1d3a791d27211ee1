"""The vLLM command per tier: one pure function feeds Modal and `python -m tiers.serve`."""

from __future__ import annotations

import io
from pathlib import Path

import msgspec
import pytest

from gateway.tierspec import TierSpec, load_tier_specs
from tiers import serve
from tiers.vllm_command import UnpinnedRevision, check_pinned, vllm_command

TIERS_FILE = Path(__file__).resolve().parents[2] / "config" / "tiers.toml"
SPECS = load_tier_specs(TIERS_FILE)


def flag(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


@pytest.mark.parametrize(
    ("tier", "model", "served", "gpu"),
    [
        ("dev", "Qwen/Qwen2.5-7B-Instruct", "dev", "L40S"),
        ("prod", "Qwen/Qwen2.5-32B-Instruct", "prod", "A100-80GB"),
    ],
)
def test_each_tier_serves_its_pinned_model_with_xgrammar(
    tier: str, model: str, served: str, gpu: str
) -> None:
    spec = SPECS[tier]
    cmd = vllm_command(spec)
    assert spec.gpu == gpu
    assert cmd[:3] == ["vllm", "serve", model]
    assert flag(cmd, "--revision") == spec.revision
    assert len(spec.revision) == 40
    assert flag(cmd, "--served-model-name") == served
    assert flag(cmd, "--structured-outputs-config.backend") == "xgrammar"
    assert flag(cmd, "--generation-config") == "vllm"  # not the model's top_k/rep. penalty
    assert flag(cmd, "--max-model-len") == str(spec.max_model_len)
    assert float(flag(cmd, "--gpu-memory-utilization")) == spec.gpu_memory_utilization
    assert flag(cmd, "--max-num-seqs") == str(spec.max_concurrency)
    assert flag(cmd, "--port") == str(spec.port)
    # Qwen2.5 writes Hermes-style <tool_call> blocks: `auto` tool choice needs that parser.
    assert "--enable-auto-tool-choice" in cmd
    assert flag(cmd, "--tool-call-parser") == "hermes"


@pytest.mark.parametrize("tier", sorted(SPECS))
def test_no_removed_or_auto_backend_flags(tier: str) -> None:
    cmd = vllm_command(SPECS[tier])
    joined = " ".join(cmd)
    assert "guided-decoding" not in joined  # removed in favour of structured outputs
    assert "guided_decoding" not in joined
    assert "auto" not in cmd  # the backend is pinned, never chosen per request
    assert "--enable-sleep-mode" not in cmd  # snapshots are opt-in


@pytest.mark.parametrize(
    ("fast_boot", "concurrency", "eager", "capture"),
    [(False, 16, False, "16"), (False, 4, False, "4"), (True, 16, True, None)],
)
def test_fast_boot_trades_graphs_for_eager(
    fast_boot: bool, concurrency: int, eager: bool, capture: str | None
) -> None:
    spec = msgspec.structs.replace(SPECS["prod"], fast_boot=fast_boot, max_concurrency=concurrency)
    cmd = vllm_command(spec)
    assert ("--enforce-eager" in cmd) is eager
    if capture is None:
        assert "--max-cudagraph-capture-size" not in cmd
    else:
        assert flag(cmd, "--max-cudagraph-capture-size") == capture


def test_sleep_mode_and_port_override() -> None:
    cmd = vllm_command(SPECS["dev"], host="127.0.0.1", port=9001, sleep_mode=True)
    assert cmd[-1] == "--enable-sleep-mode"
    assert flag(cmd, "--host") == "127.0.0.1"
    assert flag(cmd, "--port") == "9001"


@pytest.mark.parametrize(
    "revision", ["main", "v1.0", "A09A35458C702B33EEACC393D103063234E8BC28", ""]
)
def test_a_moving_revision_is_refused(revision: str) -> None:
    spec = msgspec.structs.replace(SPECS["dev"], revision=revision)
    with pytest.raises(UnpinnedRevision, match="40-hex commit SHA"):
        check_pinned("dev", spec)


def test_serve_prints_the_same_command() -> None:
    out = io.StringIO()
    assert serve.main(["prod", "--print"], out=out) == 0
    assert out.getvalue().split() == vllm_command(SPECS["prod"])


def test_serve_refuses_unpinned_and_unknown_tiers(tmp_path: Path) -> None:
    bad = tmp_path / "tiers.toml"
    bad.write_text(TIERS_FILE.read_text().replace(SPECS["dev"].revision, "main"))
    err = io.StringIO()
    assert serve.main(["dev", "--config", str(bad), "--print"], err=err) == 2
    assert "not a 40-hex commit SHA" in err.getvalue()
    err = io.StringIO()
    assert serve.main(["staging", "--print"], err=err) == 2
    assert "no tier 'staging'" in err.getvalue()


def test_serve_without_vllm_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serve.shutil, "which", lambda _name: None)
    err = io.StringIO()
    assert serve.main(["dev"], err=err) == 2
    assert "vllm==0.33.0" in err.getvalue()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch/vLLM import-time notices
@pytest.mark.parametrize("tier", sorted(SPECS))
def test_vllms_own_parser_accepts_the_command(tier: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Runs where vLLM is importable (the pinned version); skipped in the gateway's venv.
    monkeypatch.setenv("VLLM_TARGET_DEVICE", "cpu")  # parse on a machine without a GPU
    pytest.importorskip("vllm")
    from vllm.entrypoints.common.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    spec: TierSpec = msgspec.structs.replace(SPECS[tier], fast_boot=False)
    for variant in (spec, msgspec.structs.replace(spec, fast_boot=True)):
        args = make_arg_parser(FlexibleArgumentParser()).parse_args(vllm_command(variant)[2:])
        assert args.model_tag == variant.model or args.model == variant.model
        assert args.revision == variant.revision
        assert args.structured_outputs_config.backend == "xgrammar"
        assert args.generation_config == "vllm"
        assert args.enforce_eager is variant.fast_boot
        assert args.max_num_seqs == variant.max_concurrency
        assert args.enable_auto_tool_choice is True
        assert args.tool_call_parser == "hermes"
        if not variant.fast_boot:
            assert args.max_cudagraph_capture_size == variant.max_concurrency
