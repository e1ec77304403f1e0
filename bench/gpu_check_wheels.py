"""Prepare what the GPU check carries to the lent GPU machine, which reaches no registry:

- ``.whl/``: wheels (CPython 3.12, manylinux x86-64) of the studio's packages that machine
  lacks or has in other versions, each at the version installed in this checkout's venv (a set
  known to work together); bitsandbytes slimmed to its CUDA 13 libraries (the machine's torch is
  cu130), so that everything fits the 64 MiB a call may carry;
- ``.cache/gpu_check/smollm2-shape/``: the bundled model's config and tokenizer (no weights: the
  check builds random weights of the same architecture from them);
- ``.cache/gpu_check/alpaca_en_demo.json``: the speed check's data (``make test-data``'s copy);
- ``liger-kernel`` at the ``gpu`` extra's pin (pure Python; Triton comes with the machine's torch).

Both folders are ignored by git. Run here: ``.venv/bin/python bench/gpu_check_wheels.py``.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WHEELS = REPO / ".whl"
SHAPE_DIR = REPO / ".cache" / "gpu_check" / "smollm2-shape"
BUNDLED = REPO / ".data" / "models" / "smollm2-135m-instruct"
ALPACA = REPO / ".cache" / "llamafactory-data" / "alpaca_en_demo.json"
CARRY_LIMIT = 64 * 1024**2

# Missing on the GPU machine (KINDS.md's package list), or there in another version than the
# studio pins (transformers 5.17, peft): the studio's web, queue and training stacks.
PACKAGES = (
    # training
    "transformers",
    "trl",
    "peft",
    "datasets",
    "dill",
    "multiprocess",
    "bitsandbytes",
    "gguf",
    # web
    "fastapi",
    "starlette",
    "uvicorn",
    "python-multipart",
    "jinja2-fragments",
    "itsdangerous",
    "pydantic",
    "pydantic-core",
    "pydantic-settings",
    "python-dotenv",
    "annotated-types",
    "typing-inspection",
    # data and jobs
    "orjson",
    "sqlalchemy",
    "alembic",
    "mako",
    "celery",
    "kombu",
    "billiard",
    "vine",
    "amqp",
    "click-didyoumean",
    "click-repl",
    "click-plugins",
    "prompt-toolkit",
    "wcwidth",
    "tzlocal",
    "tzdata",
    "redis",
)
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)
KEEP_BNB_LIBS = ("cuda130", "cuda132")


def gpu_extra() -> list[str]:
    """The pyproject's ``gpu`` extra (Liger), pinned there: not installed on a CPU machine."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return list(project.get("optional-dependencies", {}).get("gpu", []))


def pinned() -> list[str]:
    pins = gpu_extra()
    for name in PACKAGES:
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            print(f"  {name} is not installed here: left out", file=sys.stderr)
    return pins


def download(pins: list[str]) -> None:
    shutil.rmtree(WHEELS, ignore_errors=True)
    WHEELS.mkdir()
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            "3.12",
            "--implementation",
            "cp",
            *platforms,
            "-d",
            str(WHEELS),
            *pins,
        ],
        check=True,
    )


def slim_bitsandbytes() -> None:
    """Drop the CUDA 11/12 and ROCm libraries (about 110 MB unpacked) and their RECORD lines."""
    for wheel in WHEELS.glob("bitsandbytes-*.whl"):
        with tempfile.TemporaryDirectory() as tmp:
            slim = Path(tmp) / wheel.name
            with (
                zipfile.ZipFile(wheel) as src,
                zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as out,
            ):
                dropped = {
                    n
                    for n in src.namelist()
                    if "/libbitsandbytes_" in n and not any(k in n for k in KEEP_BNB_LIBS)
                }
                for info in src.infolist():
                    if info.filename in dropped:
                        continue
                    data = src.read(info.filename)
                    if info.filename.endswith(".dist-info/RECORD"):
                        lines = data.decode().splitlines()
                        kept = [ln for ln in lines if ln.split(",", 1)[0] not in dropped]
                        data = ("\n".join(kept) + "\n").encode()
                    out.writestr(info, data)
            shutil.move(slim, wheel)


def copy_shape() -> None:
    if not (BUNDLED / ".complete").exists():
        raise SystemExit(f"no bundled model at {BUNDLED}: run `ftstudio setup` first")
    shutil.rmtree(SHAPE_DIR, ignore_errors=True)
    SHAPE_DIR.mkdir(parents=True)
    for path in BUNDLED.iterdir():
        if path.is_file() and not path.name.endswith(".safetensors") and path.name != ".complete":
            shutil.copy2(path, SHAPE_DIR / path.name)


def copy_alpaca() -> None:
    if not ALPACA.exists():
        raise SystemExit(f"no {ALPACA}: run `make test-data` first")
    shutil.copy2(ALPACA, SHAPE_DIR.parent / ALPACA.name)


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    copy_shape()
    copy_alpaca()
    download(pinned())
    slim_bitsandbytes()
    tracked = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    tree = sum(
        (REPO / p.decode()).stat().st_size for p in tracked if p and (REPO / p.decode()).is_file()
    )
    total = tree + size(WHEELS) + size(SHAPE_DIR.parent)
    for wheel in sorted(WHEELS.iterdir()):
        print(f"  {wheel.stat().st_size / 1024**2:6.1f} MiB  {wheel.name}")
    print(
        f"wheels {size(WHEELS) / 1024**2:.1f} MiB, model shape and data "
        f"{size(SHAPE_DIR.parent) / 1024**2:.1f} "
        f"MiB, working tree {tree / 1024**2:.1f} MiB: {total / 1024**2:.1f} MiB of the "
        f"{CARRY_LIMIT / 1024**2:.0f} MiB a call carries"
    )
    if total > CARRY_LIMIT:
        raise SystemExit("too large to carry in one call")


if __name__ == "__main__":
    main()
