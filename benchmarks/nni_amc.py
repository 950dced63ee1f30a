"""The incumbent, NNI 2.10's AMCPruner, on the setting `amc` is compared with (docs/searchers.md).

Issue 16 quotes one NNI run (79.2% test); this script reruns it over seeds, so that `amc`'s
seeds can be set against the incumbent's own spread rather than one draw. Everything but the
search is ours and the same as `autoprune search` uses: the task (the bench ResNet-20 weights,
the recipe's 5,000 / 500 image subsets carved with the seed), the search score (adaptive-BN
recalibration on 20 training batches, then val accuracy, i.e. `--fidelity bn`), and the final
fine-tune (`trial.fine_tune`: recalibration, then 500 steps of distillation from the dense
model) and the test on the 10,000 test images.

NNI is a peer, never a dependency: run this in a virtual environment of its own that also sees
autoprune, for example

    python -m venv ../nni-venv
    printf '%s\n' "$PWD/.venv/lib/python3.11/site-packages" "$PWD" \
        > ../nni-venv/lib/python3.11/site-packages/autoprune-here.pth
    ../nni-venv/bin/pip install --no-deps nni==2.10 json-tricks schema typeguard astor \
        prettytable PythonWebHDFS responses websockets colorama psutil tensorboard absl-py
    git show b6ddc2c:models/cifar10_resnet20.pt > r20_8ep.pt
    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 ../nni-venv/bin/python benchmarks/nni_amc.py \
        --checkpoint r20_8ep.pt --seed S --out runs/nni_amc_sS

(``--no-deps``: NNI's own requirements would replace the project's numpy and friends; the list is
what importing its AMCPruner needs beside them.)

NNI's config is its example's: every Conv2d, total FLOPs sparsity 0.5, at most 0.8 per layer,
L1 channel importance, 60 episodes (a quarter of them random warm-up, NNI's default). As shipped
it prunes each layer twice (its last step re-applies the episode's sparsities to a model already
compacted: `../shared/DEPENDENCIES.md`), so its picks land below the budget; the script reports
the pick's MACs as a fraction of dense as they are. Writes ``result.json`` in ``--out``.

Memory: under torch 2.14 NNI 2.10's AMC grows its process by about 0.5 GB per episode on this
ResNet-20, whatever the search score does (a constant score grows it as fast), so 60 episodes need
about 30 GB; on the 24 GB development machine three seeds at once were stopped at episode 19 with
the memory exhausted. Run one seed at a time on a machine with more memory than that.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch_pruning as tp

from autoprune.data import absolute_data_spec
from autoprune.task import TaskRecipe, accuracy, load_task
from autoprune.trial import ScoringConfig, fine_tune


def _resident_gb() -> float:
    """This process's resident memory (NNI's episodes grow it; see the module docstring)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="the dense ResNet-20's weights")
    parser.add_argument("--data", default="imagefolder:../shared/data/cifar10")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=60)
    parser.add_argument("--budget", type=float, default=0.5, help="MACs of dense to keep")
    parser.add_argument("--final-steps", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    from nni.algorithms.compression.v2.pytorch.pruning import AMCPruner  # a peer, not a dependency

    torch.set_num_threads(args.threads)
    recipe = TaskRecipe(model="resnet20", data=absolute_data_spec(args.data), checkpoint=str(Path(args.checkpoint).resolve()),
                        seed=args.seed, train_limit=5000, val_limit=500)
    task = load_task(recipe)
    scoring = ScoringConfig(final_steps=args.final_steps, threads=args.threads)
    inputs = task.example_inputs()
    dense_macs, _ = tp.utils.count_ops_and_params(task.model, inputs)
    scores: list[float] = []

    def search_score(model: torch.nn.Module) -> float:
        """`--fidelity bn`: recalibrate a copy's BN statistics, then val accuracy."""
        scored = copy.deepcopy(model)
        fine_tune(scored, task, scoring, 0, args.seed)
        scores.append(accuracy(scored, task.data, task.data.val))
        print(f"episode {len(scores)}: val {scores[-1]:.4f}, resident {_resident_gb():.2f} GB", flush=True)
        return scores[-1]

    args.out.mkdir(parents=True, exist_ok=True)
    random.seed(args.seed)  # NNI's DDPG draws from numpy and torch
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    config = [{"op_types": ["Conv2d"], "total_sparsity": 1.0 - args.budget, "max_sparsity_per_layer": 0.8}]
    pruner = AMCPruner(args.episodes, copy.deepcopy(task.model), config, inputs, search_score,
                       pruning_algorithm="l1", log_dir=str(args.out / "nni"), target="flops")
    started = time.perf_counter()
    pruner.compress()
    search_s = time.perf_counter() - started
    _, pick, _, pick_score, _ = pruner.get_best_result()

    macs, params = tp.utils.count_ops_and_params(pick, inputs)
    started = time.perf_counter()
    fine_tune(pick, task, scoring, args.final_steps, args.seed)
    final_s = time.perf_counter() - started
    result = {
        "seed": args.seed, "episodes": args.episodes, "evaluations": len(scores), "search_s": round(search_s, 1),
        "pick_search_score": float(pick_score), "pick_macs_fraction": round(macs / dense_macs, 4),
        "pick_params": int(params), "final_steps": args.final_steps, "final_s": round(final_s, 1),
        "val_accuracy": accuracy(pick, task.data, task.data.val),
        "test_accuracy": accuracy(pick, task.data, task.data.test),
        "dense_test_accuracy": task.dense_test_accuracy, "threads": args.threads,
    }
    (args.out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
