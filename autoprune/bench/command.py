"""Arguments of ``autoprune bench`` and ``autoprune train``, and what each does once parsed."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from autoprune.errors import UserError

QUICK_SEEDS, SEEDS = 1, 3
# Searchers the headline bench leaves out: a second Optuna sampler or solver of a family that
# already has its best representative there (tpe for the samplers, knapsack for the solvers).
ALTERNATES = ("nsga2", "gp", "cmaes", "qmc", "knapsack-greedy")
QUICK_FIDELITY_POLICIES, FIDELITY_POLICIES = 6, 30
QUICK_THROUGHPUT_TRIALS, THROUGHPUT_TRIALS = 2, 6


def add_bench_args(p: argparse.ArgumentParser) -> None:
    from autoprune.bench.fidelity import CHEAP, QUICK_CHEAP
    from autoprune.bench.finetune_curve import DEFAULT_STEPS, QUICK_STEPS
    from autoprune.bench.harness import DEFAULT_DATA_ROOT

    p.add_argument("--data-root", help=f"CIFAR-10 ImageFolder tree (train/<class>/*, test/<class>/*) "
                   f"[default: {DEFAULT_DATA_ROOT}]")
    p.add_argument("--quick", action="store_true", help="tiny subsets and a few cheap trials (minutes; for tests)")
    p.add_argument("--seeds", type=int, help=f"search seeds per searcher [default: {SEEDS}; --quick {QUICK_SEEDS}]")
    p.add_argument("--trials", type=int, help="scored trials per search in the equal-trials view [default: the recipe's]")
    p.add_argument("--time-limit", type=float, help="seconds per search in the equal-time view "
                   "[default: the median time random search took for the equal-trials view]")
    p.add_argument("--out", help="the report to write [default: BENCHMARKS.md; with --render, the recorded run's]")
    p.add_argument("--figures-dir", help="where the PNG figures go [default: benchmarks/figures next to --out]")
    p.add_argument("--runs-dir", default="benchmarks/runs", help="run directories and the Optuna storage "
                   "[default: benchmarks/runs]")
    p.add_argument("--searchers", help="comma-separated searcher names (a portfolio of chosen members as "
                   "portfolio:tpe+knapsack), 'headline' (one representative per "
                   "family: every registered searcher but the alternates " + ", ".join(ALTERNATES) + ") or 'all' "
                   "(the full grid) [default: headline]")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted bench run in RUN_DIR: every "
                   "(task, searcher, seed) already in its results.json is kept and skipped")
    p.add_argument("--redo", metavar="SEARCHER:SEED,...", help="with --resume: drop these finished units' results "
                   "(every task's) and run them again, e.g. after a fix that changes them (random:0,tpe:0)")
    p.add_argument("--study", action="append", help="a bench recipe (repeatable) [default: the ResNet-20 latency 0.5 and 0.3 and MobileNetV2 "
                   "MACs 0.5 recipes in studies/; --quick the first]")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe setting for every task (repeatable; VALUE null clears it)")
    p.add_argument("--sections", help="comma-separated: trials,time,fidelity,finetune,throughput [default: all]")
    p.add_argument("--executors", help="comma-separated executors for the throughput section "
                   "[default: inline,processes,ray]")
    p.add_argument("--fidelity-policies", type=int, help=f"random policies of the fidelity study "
                   f"[default: {FIDELITY_POLICIES}; --quick {QUICK_FIDELITY_POLICIES}]")
    p.add_argument("--fidelities", help="comma-separated cheap fidelities of the fidelity study (bn, kd:N, "
                   f"kd:N+features) [default: {','.join(CHEAP)}; --quick {','.join(QUICK_CHEAP)}]")
    p.add_argument("--finetune-steps", help="comma-separated final fine-tune lengths of the fine-tune curve "
                   f"[default: {','.join(map(str, DEFAULT_STEPS))}; --quick {','.join(map(str, QUICK_STEPS))}]")
    p.add_argument("--throughput-trials", type=int, help=f"scored trials per throughput run "
                   f"[default: {THROUGHPUT_TRIALS}; --quick {QUICK_THROUGHPUT_TRIALS}]")
    p.add_argument("--cache-dir", help="cache of decoded data and dense models")
    p.add_argument("--render", metavar="RUN_DIR", nargs="+", help="write the report again from RUN_DIR/results.json "
                   "(a finished or interrupted run; several are merged), with the settings of the command each "
                   "recorded; runs nothing")


def add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="resnet20 | resnet56 | mobilenetv2 (name:key=value,...)")
    p.add_argument("--data", required=True, help="imagefolder:DIR | cifar10:DIR | digits")
    p.add_argument("--out", required=True, help="where the state dict goes (a JSON training record goes beside it)")
    p.add_argument("--epochs", type=int, default=30, help="training epochs [default: 30]")
    p.add_argument("--seed", type=int, default=0, help="seed of the validation split and of training [default: 0]")
    p.add_argument("--image-size", type=int, help="input resolution [default: the data's]")
    p.add_argument("--batch-size", type=int, default=128, help="[default: 128]")
    p.add_argument("--lr", type=float, default=0.1, help="peak learning rate (cosine decay) [default: 0.1]")
    p.add_argument("--train-limit", type=int, help="train on at most this many images [default: all]")
    p.add_argument("--cache-dir", help="cache of decoded data")
    p.add_argument("--threads", type=int, help="CPU threads for training [default: all cores]")
    p.add_argument("--device", default="auto", help="auto (CUDA when present) | cpu | cuda[:N]; a training "
                   "interrupted on one device continues on another [default: auto]")
    p.add_argument("--init", metavar="FILE", help="start from the weights of an earlier autoprune train (same "
                   "--model, --data, --seed; a new schedule of --epochs from --lr), recorded in the new record")


def _names(text: str | None, allowed: list[str] | tuple[str, ...], what: str) -> tuple[str, ...]:
    if text is None:
        return tuple(allowed)
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise UserError(f"unknown {what} {', '.join(unknown) or repr(text)}; choose from {', '.join(allowed)}")
    return names


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs (VALUE read as YAML: numbers, null, strings) checked against the settings."""
    import yaml

    from autoprune.settings import FIELDS

    out: dict[str, Any] = {}
    for item in items:
        key, eq, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or key not in FIELDS:
            raise UserError(f"--set {item!r}: expected KEY=VALUE with KEY one of {', '.join(FIELDS)}")
        parsed = yaml.safe_load(value) if value.strip() else None
        out[key] = str(parsed) if key == "budget" and parsed is not None else parsed
    return out


def figures_beside(report: Path) -> Path:
    """Where a report's figures go unless ``--figures-dir`` says otherwise."""
    return report.parent / "benchmarks" / "figures"


def bench_config(args: argparse.Namespace, command: str):
    """A BenchConfig from parsed arguments; bad input is a UserError (exit 2)."""
    from autoprune.bench.harness import (
        EXECUTORS,
        SECTIONS,
        BenchConfig,
        resolve_data_root,
        resolve_studies,
    )
    from autoprune.searchers import searcher_names

    # Rendering an existing run reads no images: its data root need not exist here.
    data_root = Path(args.data_root or "") if getattr(args, "render", None) else resolve_data_root(args.data_root)
    studies = resolve_studies(args.study)
    if args.quick and not args.study:  # quick: the first reference task only, unless recipes are named
        studies = studies[:1]
    for study in studies:
        if not study.is_file():
            raise UserError(f"bench recipe {study} does not exist (run from the repository root, or pass --study)")
    quick = bool(args.quick)
    seeds = args.seeds if args.seeds is not None else (QUICK_SEEDS if quick else SEEDS)
    for flag, value in (("--seeds", seeds), ("--trials", args.trials), ("--fidelity-policies", args.fidelity_policies),
                        ("--throughput-trials", args.throughput_trials)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be at least 1, got {value}")
    out = Path(args.out or "BENCHMARKS.md")
    return BenchConfig(
        finetune_steps=_steps(getattr(args, "finetune_steps", None), quick),
        fidelities=_cheap(getattr(args, "fidelities", None), quick),
        data_root=data_root, studies=studies, searchers=bench_searchers(args.searchers, searcher_names()),
        seeds=seeds, quick=quick, trials=args.trials, time_limit=args.time_limit, out=out,
        runs_dir=Path(args.runs_dir),
        figures_dir=Path(args.figures_dir) if args.figures_dir else figures_beside(out),
        sections=_names(args.sections, SECTIONS, "section"), executors=_names(args.executors, EXECUTORS, "executor"),
        fidelity_policies=args.fidelity_policies or (QUICK_FIDELITY_POLICIES if quick else FIDELITY_POLICIES),
        throughput_trials=args.throughput_trials or (QUICK_THROUGHPUT_TRIALS if quick else THROUGHPUT_TRIALS),
        overrides=parse_overrides(args.set), cache_dir=args.cache_dir, command=command,
        resume=_resume_dir(getattr(args, "resume", None)),
        redo=_redo(getattr(args, "redo", None), getattr(args, "resume", None)),
    )


def _redo(text: str | None, resume: str | None) -> tuple[tuple[str, int], ...]:
    """``--redo random:0,tpe:1``: (searcher, seed) units to run again in a resumed bench."""
    if not text:
        return ()
    if resume is None:
        raise UserError("--redo drops finished units of a resumed bench: give --resume RUN_DIR with it")
    units = []
    for item in text.split(","):
        name, _, seed = item.strip().partition(":")
        if not name or not seed.isdigit():
            raise UserError(f"--redo {item.strip()!r}: give SEARCHER:SEED, e.g. random:0")
        units.append((name, int(seed)))
    return tuple(units)


def _cheap(text: str | None, quick: bool) -> tuple[str, ...]:
    from autoprune.bench.fidelity import CHEAP, QUICK_CHEAP, check_fidelities

    if text is None:
        return QUICK_CHEAP if quick else CHEAP
    return check_fidelities(text)


def _steps(text: str | None, quick: bool) -> tuple[int, ...]:
    """``--finetune-steps``: distinct lengths of at least 0, in increasing order."""
    from autoprune.bench.finetune_curve import DEFAULT_STEPS, QUICK_STEPS

    if text is None:
        return QUICK_STEPS if quick else DEFAULT_STEPS
    try:
        steps = sorted({int(t) for t in text.split(",") if t.strip()})
    except ValueError:
        steps = []
    if not steps or steps[0] < 0:
        raise UserError(f"--finetune-steps {text!r}: give comma-separated step counts of at least 0, e.g. 0,300,1000")
    return tuple(steps)


def bench_searchers(text: str | None, registered: list[str]) -> tuple[str, ...]:
    """``headline`` (default), ``all``, or named searchers, each checked against the registry."""
    if text is None or text.strip() == "headline":
        return tuple(n for n in registered if n not in ALTERNATES)
    if text.strip() == "all":
        return tuple(registered)
    tokens = [n.strip() for n in text.split(",") if n.strip()]
    chosen = [n for n in tokens if not n.startswith("portfolio:")]
    if chosen:
        _names(",".join(chosen), registered, "searcher")
    for token in tokens:
        if token.startswith("portfolio:"):  # members joined by '+', since ',' separates searchers here
            from autoprune.searchers.portfolio import PortfolioConfig

            PortfolioConfig.from_spec(token.partition(":")[2])
    if not tokens:
        raise UserError(f"unknown searcher {text!r}; choose from {', '.join(registered)}")
    return tuple(tokens)


def _resume_dir(given: str | None) -> Path | None:
    if given is None:
        return None
    path = Path(given)
    if not (path / "results.json").is_file():
        raise UserError(f"--resume {given}: no results.json there; give a bench run directory (benchmarks/runs/<stamp>)")
    return path


def bench_command(args: argparse.Namespace, command: str, console) -> int:
    from autoprune.bench.harness import run_bench

    def log(msg: str) -> None:
        console.print(msg, markup=False, highlight=False, soft_wrap=True)

    if args.render:
        from autoprune.bench.render import render
        from autoprune.cli import parser

        render([Path(d) for d in args.render], parser(), log=log,
               out=Path(args.out) if args.out else None,
               figures_dir=Path(args.figures_dir) if args.figures_dir else None)
        return 0
    cfg = bench_config(args, command)
    run_bench(cfg, log=log)
    return 0


def train_command(args: argparse.Namespace, command: str, console) -> int:
    from autoprune.bench.dense import TrainSpec, train_reference

    spec = TrainSpec(model=args.model, data=args.data, out=Path(args.out), epochs=args.epochs, seed=args.seed,
                     image_size=args.image_size, batch_size=args.batch_size, lr=args.lr,
                     train_limit=args.train_limit, cache_dir=args.cache_dir, threads=args.threads, device=args.device,
                     init=args.init)
    train_reference(spec, command, log=lambda msg: console.print(msg, markup=False, highlight=False, soft_wrap=True))
    return 0
