"""``autoprune search | apply | export | show``: the command line, the only place YAML and names are parsed.

Bad input gets one line on stderr and exit status 2; Ctrl-C keeps every finished trial.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from autoprune import interrupts
from autoprune.errors import UserError
from autoprune.settings import (
    FIELDS,
    SearchSettings,
    load_study_recipe,
    resolve_run,
    settings_from_dict,
)
from autoprune.yaml_files import read_yaml_mapping

if TYPE_CHECKING:
    from rich.console import Console

HELP = {
    "target": "resource to constrain: latency | macs | params",
    "budget": "fraction of the dense model (0.5) or an absolute value with a unit (4ms, 800us, 150M, 2.5G); "
              "with --objectives a hard bound on the front",
    "objectives": "search a Pareto front instead of one policy: accuracy and one or more costs (accuracy,latency; "
                  "any of accuracy, latency, macs, params); nothing is exported, `autoprune export RUN_DIR --trial N` "
                  "finalises a point",
    "algorithm": "pymoo algorithm of the emo searcher: nsga2 | nsga3",
    "latency_batch": "batch size latency is measured at",
    "latency_threads": "CPU threads latency is measured with",
    "latency_warmup": "untimed forward passes before each latency reading",
    "latency_repeats": "timed forward passes per latency reading (the median is taken)",
    "model": "resnet20 | resnet32 | resnet56 | mobilenetv2 (NAME:key=value,...) | torchvision:NAME | pkg.module:factory",
    "data": "digits (built in) | cifar10:DIR (python format) | imagefolder:DIR",
    "checkpoint": "weights of the dense model (a state dict, loaded with weights_only=True)",
    "image_size": "input resolution in pixels",
    "dense_epochs": "epochs to train the dense model when no --checkpoint is given",
    "train_limit": "use at most this many training images",
    "val_limit": "use at most this many validation images",
    "searcher": "search family: tpe, random, knapsack, ... or portfolio:A,B (see `autoprune searchers`)",
    "agent": "stable-baselines3 agent of the RL searchers (amc, purl): ddpg | td3 | sac",
    "trials": "scored search trials the study holds when the search ends (policies rejected over budget "
              "do not count; with --resume only the missing ones run)",
    "time_limit": "stop proposing after this many seconds",
    "space": "search-space rules: a YAML file or a name in search_spaces/",
    "granularity": "slot (one ratio per dependency group) | stage (one width multiplier per stage)",
    "seed": "seed of everything (same seed, same policies and accuracies)",
    "resume": "continue the study in --run-dir/--storage with the settings it was started with (flags given "
              "here override them): run the missing --trials, then whichever of the final fine-tune, export "
              "and report is missing",
    "fidelity": "how candidates are scored: bn (BN recalibration only) | kd:N (N distillation steps)",
    "probe_fidelity": "how the probes of the searchers that take them are scored (knapsack's sensitivity scan, "
                      "purl's score after every step): bn | kd:N; probes do not count against --trials",
    "rungs": "multi-fidelity successive halving, cheapest first (bn,kd:30,kd:100): --trials policies scored "
             "at the first rung, the best third promoted to each next; overrides --fidelity",
    "criterion": "channel importance: magnitude | taylor | bn",
    "final_steps": "distillation steps of the chosen policy's final fine-tune",
    "feature_distill": "weight of inner (feature) distillation; 0 = logits only",
    "lr": "fine-tune learning rate",
    "executor": "where trials run: inline (this process) | processes | ray",
    "workers": "trials run at once",
    "threads": "CPU threads per trial for training",
    "ray_address": "join this Ray cluster: host:port, or auto on one of its nodes",
    "trial_cpus": "CPUs Ray reserves for each trial (num_cpus; a fraction below 1, or a whole number); torch "
                  "threads per trial follow from it unless --threads is given",
    "trial_gpus": "GPUs Ray reserves for each trial (num_gpus; 0.25 lets four fine-tunes share one GPU)",
    "device": "where dense training, fine-tunes and evaluation run: auto (CUDA when present) | cpu | cuda[:N]",
    "latency_device": "the deploy device latency is read on: cpu | cuda[:N] (need not be the training device)",
    "latency_table": "a latency table made on a deploy device outside the search (`autoprune profile --out FILE`, "
                     "run there): every latency is its estimate, none is read here; its batch and threads apply",
    "run_dir": "where the study, policy, model and report go",
    "storage": "an Optuna storage: an SQLAlchemy URL, or a journal file (journal:PATH or a path ending in "
               ".journal); several searches may share one",
    "study_name": "name of the study in the storage",
    "cache_dir": "where trained dense models and decoded data are cached",
}
# What a default of None means, in words (other defaults are shown as their value).
DEFAULT_WORDS = {
    "image_size": "the data's",
    "budget": "0.5; with --objectives none",
    "objectives": "none: one policy under the budget",
    "checkpoint": "train the dense model once and cache it",
    "latency_table": "none: latency is read here, on --latency-device",
    "dense_epochs": "10 for digits, 30 otherwise",
    "train_limit": "all", "val_limit": "all", "time_limit": "none",
    "space": "by model: cifar_resnet, mobilenet, torchvision or default",
    "rungs": "none, every trial at --fidelity",
    "workers": "1; on a Ray cluster, what it offers: its GPUs / --trial-gpus where trials take GPUs, "
               "else its CPUs / --trial-cpus",
    "threads": "cores / workers; under ray, --trial-cpus",
    "ray_address": "RAY_ADDRESS when set (as in a `ray job submit` job), else start a local Ray",
    "trial_cpus": "--threads, else the cluster's CPUs / workers, or 1 where the workers follow from the cluster",
    "trial_gpus": "1 with --device cuda or --latency-device cuda, 1 with --device auto where the cluster has "
                  "GPUs, else 0",
    "run_dir": "runs/<target>-<budget>-<searcher>-<time> (front-<objectives>-<searcher>-<time>)",
    "storage": "SQLite file study.db in the run directory",
    "study_name": "the run directory's name; with --resume, the study the storage holds",
    "cache_dir": "$AUTOPRUNE_CACHE or ~/.cache/autoprune",
}
GROUPS = {
    "target and budget": ("target", "budget", "objectives", "latency_device", "latency_table", "latency_batch", "latency_threads", "latency_warmup",
                          "latency_repeats"),
    "model and data": ("model", "data", "checkpoint", "image_size", "dense_epochs", "train_limit", "val_limit"),
    "search": ("searcher", "agent", "algorithm", "trials", "time_limit", "space", "granularity", "seed", "resume"),
    "scoring": ("fidelity", "probe_fidelity", "rungs", "criterion", "final_steps", "feature_distill", "lr"),
    "execution": ("device", "executor", "workers", "threads", "ray_address", "trial_cpus", "trial_gpus"),
    "output and storage": ("run_dir", "storage", "study_name", "cache_dir"),
}
# Placeholders in the help (argparse's default, the flag's name in capitals, is long for some).
METAVARS = {
    "target": "TARGET", "budget": "BUDGET", "model": "SPEC", "data": "SPEC", "checkpoint": "FILE",
    "space": "RULES", "granularity": "KIND", "searcher": "NAME", "agent": "NAME", "fidelity": "F", "probe_fidelity": "F",
    "rungs": "F,F,...", "criterion": "NAME", "executor": "NAME", "ray_address": "ADDRESS", "run_dir": "DIR",
    "storage": "URL", "study_name": "NAME", "cache_dir": "DIR", "lr": "LR", "feature_distill": "WEIGHT",
    "time_limit": "SECONDS", "device": "DEVICE", "latency_device": "DEVICE", "latency_table": "FILE", "objectives": "A,B,...",
    "algorithm": "NAME", "trial_cpus": "CPUS", "trial_gpus": "GPUS",
}
DESCRIPTION = """\
Search how much to prune each group of coupled channels so that the model
meets the budget, then fine-tune, export and report the best policy found."""
EXAMPLES = """\
examples:
  autoprune search              # ResNet-20 on digits, half its latency, TPE
  autoprune search --target macs --budget 0.4 --searcher knapsack \\
      --run-dir runs/macs40
  autoprune search --target latency --budget 4ms \\
      --model torchvision:resnet18 --checkpoint resnet18.pt \\
      --data imagefolder:/data/my_images --image-size 224
  autoprune search --study studies/digits_resnet20_latency.yaml --seed 1
  autoprune search --run-dir runs/macs40 --resume --trials 40   # 40 in all
  autoprune search --objectives accuracy,latency --trials 40 \\
      --run-dir runs/front        # a Pareto front, then one point:
  autoprune export runs/front --at latency=3ms

Names (searcher, model, data, fidelity, space, ...) are checked before any
work starts. The run directory holds study.db (optuna-dashboard
sqlite:///DIR/study.db), policy.yaml, model.pt, summary.json and report.md.
"""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description and examples as written; flag help wrapped at spaces only ("fine-tune"
    stays whole)."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        import textwrap

        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def flag_help(name: str) -> str:
    """A flag's help with its default said once: in words where None means something."""
    field = FIELDS[name]
    if field.type in ("bool", bool):
        return HELP[name]
    default = DEFAULT_WORDS.get(name, field.default)
    return f"{HELP[name]} (default: {default})"


def _add_search_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--study", metavar="RECIPE", help="a study recipe (studies/*.yaml) holding any of the settings "
                   "below; flags given here override it")
    grouped = {name for names in GROUPS.values() for name in names}
    other = tuple(name for name in FIELDS if name not in grouped)  # a new setting is never left without a flag
    for title, names in [*GROUPS.items(), *([("other", other)] if other else [])]:
        group = p.add_argument_group(title)
        for name in names:
            f = FIELDS[name]
            flag = "--" + name.replace("_", "-")
            if f.type in ("bool", bool):
                group.add_argument(flag, action="store_true", default=None, help=flag_help(name))
                continue
            kind = {"int": int, "float": float, "int | None": int, "float | None": float}.get(str(f.type), str)
            metavar = METAVARS.get(name, "N" if kind is int else "X")
            group.add_argument(flag, type=kind, default=None, metavar=metavar, help=flag_help(name))


class _Parser(argparse.ArgumentParser):
    """argparse with bad flags reported as the CLI's other errors are: one line, exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def _add_apply_args(p: argparse.ArgumentParser) -> None:
    """Flags of re-applying a policy (``apply``, ``export --policy``)."""
    p.add_argument("--model", help="override the policy's model spec")
    p.add_argument("--data", help="override the policy's data spec")
    p.add_argument("--checkpoint", help="override the policy's dense checkpoint")
    steps = FIELDS["final_steps"].default
    p.add_argument("--finetune-steps", type=int, default=steps,
                   help=f"distillation steps after BN recalibration, as the search's final fine-tune (default {steps}; 0: not fine-tuned)")
    p.add_argument("--lr", type=float, default=FIELDS["lr"].default, help=f"fine-tune learning rate (default {FIELDS['lr'].default})")
    p.add_argument("--cache-dir", help="cache of dense models and data")


def _add_profile_args(p: argparse.ArgumentParser) -> None:
    """Flags of ``autoprune profile``: the model and space of the search, and how latency is read."""
    p.add_argument("--out", metavar="FILE", help="the table to write (JSON); give it to `autoprune search "
                   "--latency-table FILE`")
    p.add_argument("--measure", metavar="MODEL", help="instead, time this exported model.pt here (the final "
                   "check on the device)")
    p.add_argument("--table", metavar="FILE", help="with --measure: print this table's estimate beside the reading")
    for name in ("model", "data", "image_size", "space", "granularity", "latency_batch", "latency_threads",
                 "latency_warmup", "latency_repeats", "seed", "cache_dir"):
        kind = {"int": int, "int | None": int}.get(str(FIELDS[name].type), str)
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=FIELDS[name].default,
                       metavar=METAVARS.get(name, "N" if kind is int else "X"),
                       help=f"{HELP[name]}, as in the search (default: {DEFAULT_WORDS.get(name, FIELDS[name].default)})")
    p.add_argument("--calibration", type=int, default=16, metavar="N",
                   help="networks built and timed to fit the table's calibration (default: 16)")


def parser() -> argparse.ArgumentParser:
    from autoprune import __version__

    top = _Parser(prog="autoprune", description="Search-based structured pruning for PyTorch.")
    top.add_argument("--version", action="version", version=f"autoprune {__version__}")
    sub = top.add_subparsers(dest="command", required=True, parser_class=_Parser)
    s = sub.add_parser("search", help="search per-layer pruning ratios that meet a budget",
                       usage="%(prog)s [--study RECIPE] [options]", epilog=EXAMPLES,
                       description=DESCRIPTION, formatter_class=_HelpFormatter)
    _add_search_args(s)
    a = sub.add_parser("apply", help="apply a saved policy to the dense model, fine-tune it and write the slimmed model")
    a.add_argument("--policy", required=True, help="a policy YAML (policy.yaml of a run, or policies/*.yaml)")
    a.add_argument("--out", required=True, help="where to write it; the suffix picks the format: .pt (torch), .onnx, .ts (TorchScript)")
    _add_apply_args(a)
    e = sub.add_parser("export", help="write a run's slimmed model (or a re-applied policy) as torch, ONNX or TorchScript")
    e.add_argument("run_dir", nargs="?", help="a run directory made by `autoprune search` (its model.pt is exported)")
    e.add_argument("--policy", help="re-apply this policy instead, as `autoprune apply` does")
    e.add_argument("--trial", type=int, metavar="N", help="give search trial N of RUN_DIR (a point of its front) "
                   "the final fine-tune first, into RUN_DIR/points/trial-N/, and export that")
    e.add_argument("--at", metavar="METRIC=VALUE", help="as --trial, for the most accurate trial within a bound: "
                   "latency=3ms, macs=0.4 (of dense), params=1.2M")
    e.add_argument("--format", choices=("torch", "onnx", "torchscript"), help="default: by --out's suffix, else onnx")
    e.add_argument("--out", help="where to write it (default: RUN_DIR/model.onnx, or model.ts for torchscript)")
    e.add_argument("--trust-factory", action="store_true",
                   help="let a pkg.module:function model spec recorded in model.pt be imported and called")
    _add_apply_args(e)
    w = sub.add_parser("show", help="print a finished (or running) study")
    w.add_argument("run_dir", help="a run directory made by `autoprune search`")
    w.add_argument("--storage", help="Optuna storage, if not the run directory's SQLite file")
    ls = sub.add_parser("searchers", help="list the available searchers: name, family, what it does")
    ls.add_argument("--names", action="store_true", help="names only, one a line (for scripts)")
    p = sub.add_parser("profile", help="on a deploy device outside the search, write its latency table "
                       "(--out), or time an exported model there (--measure)")
    _add_profile_args(p)
    from autoprune.bench.command import add_bench_args, add_train_args

    b = sub.add_parser("bench", help="benchmark every searcher on reference tasks and write BENCHMARKS.md")
    add_bench_args(b)
    t = sub.add_parser("train", help="train a dense reference model once and save its state dict")
    add_train_args(t)
    return top


def resolve_settings(args: argparse.Namespace) -> SearchSettings:
    """Flags over the study recipe (``--study``); with ``--resume``, both over the settings the run
    directory was started with (its ``settings.yaml``), so a resumed run continues the same search.
    Every name is checked here, and the run directory and study name fixed, before any work."""
    data: dict[str, Any] = saved_settings(args.run_dir) if args.resume and args.run_dir else {}
    data.update(load_study_recipe(args.study) if args.study else {})
    for name in FIELDS:
        value = getattr(args, name, None)
        if value is not None:
            data[name] = value
    return resolve_run(settings_from_dict(data, args.study or "command line"))


def saved_settings(run_dir: str) -> dict[str, Any]:
    """The settings a run directory was started with (empty if it has none yet)."""
    path = Path(run_dir) / "settings.yaml"
    if not path.is_file():
        return {}
    data = read_yaml_mapping(path, "saved settings")
    settings_from_dict(data, str(path))
    return data


def print_searchers(*, names_only: bool = False) -> None:
    """``autoprune searchers``: one line each, name, family, whether it is a baseline, what it does."""
    from autoprune.searchers import searcher_table

    rows = searcher_table()
    if names_only:
        print("\n".join(row.name for row in rows))
        return
    header = ("searcher", "family", "baseline", "what it does")
    lines = [(r.name, r.family, "yes" if r.baseline else "no", r.summary) for r in rows]
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(3)]
    for line in [header, *lines]:
        print("  ".join(f"{cell:<{w}}" for cell, w in zip(line[:3], widths, strict=True)) + "  " + line[3])
    print("\nBaselines are what every other searcher must beat; --searcher portfolio:A,B runs several at once.")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    from autoprune.progress import make_console

    console = make_console(stderr=True)
    with interrupts.handled():
        try:
            status = _run(args, argv, console)
            interrupts.check()  # a signal a dependency swallowed still ends the command as interrupted
            return status
        except UserError as exc:
            from rich.text import Text

            console.print(Text("error: ", style="bold red") + Text(str(exc)), soft_wrap=True)
            return 2
        except KeyboardInterrupt as exc:
            console.print("interrupted: every finished trial is kept in the study; continue with --resume")
            return interrupts.exit_status(exc)


def _run(args: argparse.Namespace, argv: list[str], console: Console) -> int:
    """Run the parsed command; its exit status."""
    if args.command == "search":
        from autoprune.commands import search_command

        return search_command(resolve_settings(args), console, "autoprune " + shlex.join(argv))
    if args.command == "apply":
        from autoprune.commands import apply_command

        return apply_command(args, console)
    if args.command == "export":
        from autoprune.commands import export_command

        return export_command(args, console)
    if args.command == "show":
        from autoprune.commands import show_command
        from autoprune.progress import make_console

        return show_command(args.run_dir, args.storage, make_console())
    if args.command == "searchers":
        print_searchers(names_only=args.names)
        return 0
    if args.command == "profile":
        from autoprune.commands import profile_command

        return profile_command(args, console)
    if args.command in ("bench", "train"):
        from autoprune.bench import command as bench_cli

        run = bench_cli.bench_command if args.command == "bench" else bench_cli.train_command
        return run(args, "autoprune " + shlex.join(argv), console)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
