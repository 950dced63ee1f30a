#!/usr/bin/env bash
# The device checks of one session with a CUDA machine, as one short script (see docs/devices.md).
#
# Here, once:   bash benchmarks/gpu_check.sh --wheels   (downloads the wheels the GPU image lacks into .whl/)
# There:        run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=540)
#
# It runs the gpu-marked tests, then the default job on CUDA and on the CPU of that machine (same
# settings, 8 trials each so both fit), and prints the median per-trial phase times of each, so
# the time per trial on CUDA is read against the CPU in one run. Everything lands in $OUT.
set -uo pipefail
if [[ "${1:-}" == "--wheels" ]]; then  # the packages the GPU image lacks (python 3.12 there)
    grep -qx '/.whl/' .git/info/exclude || echo '/.whl/' >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl torch-pruning==1.6.1 optuna==5.0.0 alembic==1.20.1 SQLAlchemy==2.1.9 greenlet colorlog==6.12.0 \
        Mako==1.4.3 pymoo==0.6.2 autograd==1.9.1 cma==4.5.0 alive-progress==3.3.0 about-time==4.2.1 grapheme \
        Deprecated==1.3.1 moocore==0.3.2 stable_baselines3==2.9.2 gymnasium==1.4.0 farama-notifications
    exit $?
fi
WORK="$(mktemp -d)"; OUT="${OUT:-$WORK/out}"; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" .whl/*.whl || exit 1
export PYTHONPATH="$WORK/site:$PWD" PYTHONUNBUFFERED=1 WORK
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
timeout 200 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_device.py 2>&1 | tail -15 | tee "$OUT/gpu_tests.txt"
for device in cuda cpu; do
    timeout 150 python3 -m autoprune.cli search --target latency --budget 0.5 --trials 8 --device "$device" \
        --run-dir "$WORK/run-$device" --cache-dir "$WORK/cache" > "$OUT/default_$device.log" 2>&1
    echo "default job on $device: exit $?"
    python3 - "$device" <<'PY' | tee -a "$OUT/per_trial.txt"
import json, os, sys
s = json.load(open(f"{os.environ['WORK']}/run-{sys.argv[1]}/summary.json"))
print(sys.argv[1], "phase medians (s):", {k: round(v, 2) for k, v in s["phase_medians"].items()},
      "test acc", s["final"]["test_accuracy"], "dense", s["dense_test_accuracy"])
PY
done
