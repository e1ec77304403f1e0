#!/usr/bin/env bash
# The GPU check of issue 12 on a machine with one NVIDIA GPU (the lent device machine, which
# reaches no registry). Prepare on a machine with the venv and `ftstudio setup` done:
#     .venv/bin/python bench/gpu_check_wheels.py     # fills .whl/ and .cache/gpu_check/
# then run there, carrying both:  run(command="bash bench/gpu_check.sh",
#     carry=[".whl", ".cache/gpu_check"], timeout_s=540)
# Extra arguments go to bench/gpu_check.py (e.g. --steps 20). GPU_CHECK_TIMEOUT: seconds (480).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
SITE=${GPU_CHECK_SITE:-/tmp/gpu-check-site}

if compgen -G ".whl/*.whl" >/dev/null; then
    # The carried wheels: trl, bitsandbytes, the studio's web and queue stacks, and the pinned
    # transformers/peft; --no-deps: everything else they need is already on the machine.
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" .whl/*.whl || exit 1
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
else
    echo "no wheels in .whl/: using the packages installed here"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1

"$PY" - <<'PYEOF' || exit 1
import importlib.metadata as md
import torch
for name in ("torch", "transformers", "trl", "peft", "accelerate", "bitsandbytes", "datasets",
             "fastapi", "celery", "sqlalchemy"):
    try:
        print(f"  {name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"  {name} MISSING")
print("  cuda:", torch.cuda.is_available(), torch.version.cuda,
      torch.cuda.get_device_name() if torch.cuda.is_available() else "")
PYEOF
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

timeout --signal=TERM --kill-after=20 "${GPU_CHECK_TIMEOUT:-480}" "$PY" bench/gpu_check.py "$@"
rc=$?
[ "$rc" = 124 ] && echo "gpu_check: stopped by the ${GPU_CHECK_TIMEOUT:-480} s timeout"
exit "$rc"
