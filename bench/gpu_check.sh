#!/usr/bin/env bash
# The GPU check of issues 12 and 13 on a machine with one NVIDIA GPU (the lent device machine, which
# reaches no registry). Prepare on a machine with the venv and `ftstudio setup` done:
#     .venv/bin/python bench/gpu_check_wheels.py     # fills .whl/ and .cache/gpu_check/
# then run there, carrying both:  run(command="bash bench/gpu_check.sh",
#     carry=[".whl", ".cache/gpu_check"], timeout_s=600)
# Extra arguments go to bench/gpu_check.py (e.g. --steps 20). GPU_CHECK_TIMEOUT: seconds (240)
# for it; then bench/gpu_check_speed.py (GPU_CHECK_SPEED_TIMEOUT, 200) and
# bench/gpu_check_fsdp.py (GPU_CHECK_FSDP_TIMEOUT, 120), each cut to the budget left.
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

timeout --signal=TERM --kill-after=20 "${GPU_CHECK_TIMEOUT:-240}" "$PY" bench/gpu_check.py "$@"
rc=$?
[ "$rc" = 124 ] && echo "gpu_check: stopped by the ${GPU_CHECK_TIMEOUT:-240} s timeout"

# Issue 13's ratios on the GPU (bench/gpu_check_speed.py): overhead and packing against the
# plain TRL script, Liger on vs off, MFU against a matmul ceiling. Each figure prints as it is
# measured; GPU_CHECK_SPEED_TIMEOUT (200 s), cut to leave the FSDP check 100 s of the budget.
echo
echo "== speed (issue 13: the studio's fast defaults vs plain TRL)"
speed_limit=${GPU_CHECK_SPEED_TIMEOUT:-200}
left=$(( ${GPU_CHECK_BUDGET:-560} - 100 - SECONDS ))
[ "$left" -lt "$speed_limit" ] && speed_limit=$left
if [ "$speed_limit" -lt 60 ]; then
    echo "speed check: FAILED not run: ${left} s left of the check's budget"
    speed_rc=1
else
    timeout --signal=TERM --kill-after=10 "$speed_limit" "$PY" bench/gpu_check_speed.py
    speed_rc=$?
    [ "$speed_rc" = 124 ] && echo "speed check: stopped by the ${speed_limit} s timeout"
fi
[ "$rc" = 0 ] && rc=$speed_rc

# Last, after the studio's results are printed: FSDP, which accelerate runs on GPUs only, with
# the studio's own settings in one torchrun rank (bench/gpu_check_fsdp.py). Its own timeout
# (GPU_CHECK_FSDP_TIMEOUT, 120 s), cut to what is left of GPU_CHECK_BUDGET (560 s since this
# script started, inside the run's 600); its failure adds to the exit status, never hides the above.
echo
echo "== FSDP (the studio's fsdp_arguments, 1 process, nccl)"
fsdp_limit=${GPU_CHECK_FSDP_TIMEOUT:-120}
left=$(( ${GPU_CHECK_BUDGET:-560} - SECONDS ))
[ "$left" -lt "$fsdp_limit" ] && fsdp_limit=$left
if [ "$fsdp_limit" -lt 60 ]; then
    echo "FSDP (1 process, nccl): FAILED not run: ${left} s left of the check's budget"
    fsdp_rc=1
else
    fsdp_log=$(mktemp)
    timeout --signal=TERM --kill-after=10 "$fsdp_limit" \
        "$PY" -m torch.distributed.run --standalone --nnodes=1 --nproc-per-node=1 \
        bench/gpu_check_fsdp.py 2>&1 | tee "$fsdp_log"
    fsdp_rc=${PIPESTATUS[0]}
    if [ "$fsdp_rc" = 124 ]; then
        echo "FSDP (1 process, nccl): FAILED stopped by the ${fsdp_limit} s timeout"
    else  # its summary line again, below torchrun's own failure report
        grep '^FSDP (' "$fsdp_log" | tail -n 1
    fi
    rm -f "$fsdp_log"
fi
[ "$rc" = 0 ] && rc=$fsdp_rc
exit "$rc"
