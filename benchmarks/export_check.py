"""A run's model as a deployment meets it: exported to ONNX, run in ONNX Runtime, and loaded with
``autoprune.load`` in a fresh Python process; predictions compared on the whole test split.

    python benchmarks/export_check.py RUN_DIR [--cache-dir DIR]

Runs ``autoprune export RUN_DIR --format onnx`` (a subprocess, as a user would), then, in another
new process, loads ``model.pt`` with ``autoprune.load`` (nothing but the file), reads the run's
data from its recorded spec, and prints the test accuracy of PyTorch and ONNX Runtime, how many
predictions agree and the largest logit difference.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import textwrap

CHECK = textwrap.dedent("""
    import sys, time
    import numpy as np, onnxruntime as ort, torch
    import autoprune
    from autoprune.data import batches, load_data
    from autoprune.prune import read_slimmed

    run, cache = sys.argv[1], sys.argv[2] or None
    started = time.perf_counter()
    model = autoprune.load(f"{run}/model.pt")  # the file alone: the spec travels inside it
    print(f"autoprune.load in a fresh process (pid {__import__('os').getpid()}): {type(model).__name__}, "
          f"{sum(p.numel() for p in model.parameters())} parameters, {time.perf_counter() - started:.1f} s")
    recipe = read_slimmed(f"{run}/model.pt")["meta"]["recipe"]
    data = load_data(recipe["data"], image_size=recipe.get("image_size"), seed=int(recipe.get("seed") or 0),
                     cache_dir=cache, progress=False)
    session = ort.InferenceSession(f"{run}/model.onnx", providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    agree = total = torch_right = ort_right = 0
    worst = 0.0
    with torch.no_grad():
        for x, y in batches(data, data.test, 256, seed=0, shuffle=False):
            a = model(x).numpy()
            b = session.run(None, {name: x.numpy()})[0]
            worst = max(worst, float(np.abs(a - b).max()))
            agree += int((a.argmax(1) == b.argmax(1)).sum())
            torch_right += int((a.argmax(1) == y.numpy()).sum())
            ort_right += int((b.argmax(1) == y.numpy()).sum())
            total += len(y)
    print(f"test split, {total} images: PyTorch accuracy {torch_right / total:.4f}, ONNX Runtime {ort.__version__} "
          f"accuracy {ort_right / total:.4f}; same prediction on {agree}/{total}; max abs logit difference {worst:.2e}")
    sys.exit(0 if agree == total else 1)
""")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--cache-dir", default=os.environ.get("AUTOPRUNE_CACHE", ""))
    args = parser.parse_args()
    export = ["autoprune", "export", args.run_dir, "--format", "onnx"]
    if args.cache_dir:
        export += ["--cache-dir", args.cache_dir]
    print("$ " + " ".join(export), flush=True)
    code = subprocess.call(export)
    if code:
        return code
    return subprocess.call([sys.executable, "-c", CHECK, args.run_dir, args.cache_dir])


if __name__ == "__main__":
    raise SystemExit(main())
