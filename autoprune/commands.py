"""What each CLI subcommand does, once its arguments are parsed."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from autoprune.errors import UserError
from autoprune.settings import SearchSettings
from autoprune.summary import print_members, print_summary


def search_command(settings: SearchSettings, console: Console, command: str) -> int:
    """``autoprune search``: the run of ``search_run.run_search`` (what ``autoprune.search`` calls too)."""
    from autoprune.search_run import run_search

    return run_search(settings, console, command).exit_status


def show_command(run_dir: str, storage: str | None, console: Console) -> int:
    import json

    from autoprune.objectives import format_metric
    from autoprune.report import axis_label, member_rows, pareto_front
    from autoprune.summary import search_trials

    path = Path(run_dir)
    summary_path = path / "summary.json"
    storage = storage or f"sqlite:///{(path / 'study.db').resolve()}"
    if not (path / "study.db").exists() and not summary_path.exists() and storage.endswith("study.db"):
        raise UserError(f"{run_dir} is not an autoprune run directory (no study.db or summary.json)")
    trials = load_trials(storage)
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        if summary.get("front") is not None:  # an --objectives search: its front is its result
            from autoprune.front import export_hint, print_front

            print_front(console, summary)
            console.print(export_hint(path, summary), soft_wrap=True)
            return 0
        print_summary(console, summary)
        metric = summary["metric"]
    else:
        console.print("(no summary.json: the search has not finished)")
        metric = "latency_ms" if any("latency_ms" in t.metrics for t in trials) else "macs"
    # counted as summary.json and the report count: search trials only, the final fine-tune apart
    scored = sum(t.scored for t in search_trials(trials))
    table = Table(title=f"Pareto front over {scored} scored search trials (the final fine-tune not counted)")
    for col in ("search trial", "searcher", "fidelity", "val acc", axis_label(metric), "within budget"):
        table.add_column(col)
    pick = (summary.get("final") or {}).get("search_trial") if summary_path.exists() else None
    for t in pareto_front(trials, metric):
        searcher = f"{t.searcher}/{t.member}" if t.member else t.searcher
        table.add_row(f"{t.number}{' (chosen)' if t.number == pick else ''}", searcher, t.fidelity, f"{t.accuracy:.4f}", format_metric(metric, t.metrics[metric]),
                      "yes" if t.feasible else "no")
    console.print(table)
    print_members(console, member_rows(trials, pick))
    return 0


def load_trials(storage: str):
    import optuna

    from autoprune.study import open_storage, to_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url, storage = storage, open_storage(storage)  # a journal file too
    try:
        names = optuna.get_all_study_names(storage=storage)
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"cannot open Optuna storage {url}: {str(exc).splitlines()[0]}") from None
    trials = []
    for name in names:
        study = optuna.load_study(study_name=name, storage=storage)
        fp = study.user_attrs.get("fingerprint", "")
        trials += [to_trial(t, fp) for t in study.get_trials(deepcopy=False)]
    return trials


def slim_from_policy(args: argparse.Namespace, console: Console):
    """(Slimmed, task) for ``args.policy``: pruned, BN-recalibrated and fine-tuned as the search's
    final fine-tune does (``trial.fine_tune``); shared by ``apply`` and ``export --policy``."""
    import torch

    from autoprune.evaluators import DistillConfig
    from autoprune.model_io import Slimmed, architecture
    from autoprune.pipeline import default_rules_name
    from autoprune.policy_io import load_policy
    from autoprune.rules import load_rules
    from autoprune.space import SearchSpace
    from autoprune.task import TaskRecipe, accuracy, load_task
    from autoprune.trial import ScoringConfig, fine_tune, slim

    if args.finetune_steps < 0:
        raise UserError(f"--finetune-steps must be at least 0, got {args.finetune_steps}")
    check_output_file(args.out, "--out")
    policy, prov = load_policy(args.policy)
    saved = dict(prov.get("recipe") or {"model": prov.get("model", "resnet20"), "data": prov.get("data", "digits"),
                                        "image_size": prov.get("image_size"), "seed": int(prov.get("seed", 0))})
    overrides = {"model": args.model, "data": args.data, "checkpoint": args.checkpoint, "cache_dir": args.cache_dir}
    saved.update({k: v for k, v in overrides.items() if v is not None})
    recipe = TaskRecipe.from_dict(saved)
    task = load_task(recipe, progress=True)
    rules = load_rules(prov.get("search_space") or default_rules_name(recipe.model)).with_granularity(prov.get("granularity", "slot"))
    space = SearchSpace.from_model(task.model, task.example_inputs(), rules)
    space.check(policy)
    criterion = prov.get("criterion", "magnitude")
    torch.manual_seed(recipe.seed)
    model, history = slim(task, space, policy, criterion, recipe.seed)
    scoring = ScoringConfig(criterion=criterion, distill=DistillConfig(lr=args.lr))
    fine_tune(model, task, scoring, args.finetune_steps, recipe.seed)
    acc = accuracy(model, task.data, task.data.val)
    if args.finetune_steps == 0:
        console.print(f"[bold yellow]not fine-tuned[/]: --finetune-steps 0, BN statistics recalibrated only; val accuracy "
                      f"{acc:.4f} (dense {task.dense_val_accuracy:.4f}); the search's final fine-tune runs {ScoringConfig().final_steps} steps by default")
    else:
        console.print(f"fine-tuned: BN recalibrated, {args.finetune_steps} distillation steps; val accuracy {acc:.4f} "
                      f"(dense {task.dense_val_accuracy:.4f})")
    meta = {"policy": policy.as_dict(), "source_policy": str(args.policy), "architecture": architecture(task),
            "recipe": {k: v for k, v in recipe.to_dict().items() if k != "cache_dir"},
            "finetune_steps": args.finetune_steps, "val_accuracy": acc}
    return Slimmed(model, task.model, history, space.fingerprint, task.input_shape, meta), task


def validation_batch(data, n: int = 32):
    """The first ``n`` validation images, normalised: what exports are compared on."""
    from autoprune.data import batches

    return next(batches(data, data.val, n, seed=0, shuffle=False))[0]


def check_output_file(path: str, flag: str) -> None:
    """Refuse, before any work, an output path that names a directory or lies under a file."""
    out = Path(path)
    if out.is_dir():
        raise UserError(f"{flag} {path} is a directory; give a file to write, such as {out / 'model.pt'}")
    for where in out.parents:
        if where.exists():
            if not where.is_dir():
                raise UserError(f"{flag} {path}: {where} is a file, not a directory")
            break


def apply_command(args: argparse.Namespace, console: Console) -> int:
    from autoprune.model_io import output_format, write

    fmt = output_format(args.out)  # before any work: a bad --out costs nothing
    slimmed, task = slim_from_policy(args, console)
    check = write(slimmed, args.out, fmt, inputs=validation_batch(task.data), inputs_label="32 validation images")
    console.print(check.describe())
    return 0


def export_command(args: argparse.Namespace, console: Console) -> int:
    """``autoprune export RUN_DIR | --policy P``: the run's model.pt (or a re-applied policy) to
    torch, ONNX or TorchScript, verified on one batch of validation images."""
    from autoprune.model_io import FORMATS, output_format, write

    if (args.run_dir is None) == (args.policy is None):
        raise UserError("give a run directory (autoprune export RUN_DIR) or --policy P, not both or neither")
    point = args.trial is not None or args.at is not None
    if point and (args.run_dir is None or (args.trial is not None and args.at is not None)):
        raise UserError("--trial N and --at METRIC=VALUE pick a point of a run: give RUN_DIR and one of them")
    if args.policy is not None:
        if not args.out:
            raise UserError("--out is required with --policy (e.g. --out model.onnx)")
        fmt = output_format(args.out, args.format)
        slimmed, task = slim_from_policy(args, console)
        inputs, label = validation_batch(task.data), "32 validation images"
        out = Path(args.out)
    else:
        run = Path(args.run_dir)
        if point:  # a point of the run (its front), given the final fine-tune first
            from autoprune.front import export_point

            if args.out:
                check_output_file(args.out, "--out")
            source = export_point(run, trial=args.trial, at=args.at, console=console, cache_dir=args.cache_dir,
                                  command=" ".join(["autoprune", *sys.argv[1:]]))
            run = source.parent
        source = run / "model.pt"
        if not source.is_file():
            what = "is not a directory" if not run.is_dir() else "holds no model.pt (the search has not finished)"
            raise UserError(f"{run} {what}; give a run directory made by `autoprune search`, or --policy P")
        fmt = args.format or "onnx"
        out = Path(args.out) if args.out else run / f"model{FORMATS.get(fmt, ('',))[0]}"
        fmt = output_format(out, args.format if args.out else fmt)
        if out.resolve() == source.resolve():
            raise UserError(f"{source} is the run's own torch export; give --out a new file")
        slimmed = run_dir_model(run, source, args.cache_dir, args.trust_factory)
        inputs, label = recorded_inputs(slimmed.meta, args.cache_dir, console)
    check = write(slimmed, out, fmt, inputs=inputs, inputs_label=label)
    console.print(check.describe())
    return 0


def run_dir_model(run: Path, source: Path, cache_dir: str | None, trust_factory: bool):
    """The run's model.pt rebuilt from the file alone; a file saved before the model spec was
    recorded is rebuilt from the run's policy.yaml recipe instead (and gains the spec)."""
    from dataclasses import replace

    from autoprune.model_io import architecture, read
    from autoprune.prune import read_slimmed

    if "architecture" in (read_slimmed(source).get("meta") or {}):
        return read(source, trust_factory=trust_factory)
    from autoprune.policy_io import load_policy
    from autoprune.task import TaskRecipe, load_task

    if not (run / "policy.yaml").is_file():
        raise UserError(f"{source} records no model spec and {run} has no policy.yaml to rebuild it from")
    _, prov = load_policy(run / "policy.yaml")
    recipe = dict(prov.get("recipe") or {})
    if cache_dir:
        recipe["cache_dir"] = cache_dir
    task = load_task(TaskRecipe.from_dict(recipe), progress=True)
    slimmed = read(source, dense_model=task.model)
    return replace(slimmed, meta={**slimmed.meta, "architecture": architecture(task)})


def recorded_inputs(meta: dict[str, Any], cache_dir: str | None, console: Console):
    """(validation batch, label) of the data a model file records, or (None, None) where that
    data cannot be read here (the export is then compared on random inputs, and says so)."""
    from autoprune.data import load_data

    recipe = meta.get("recipe") or {}
    if not isinstance(recipe.get("data"), str):
        console.print("the model file records no data spec: comparing on random inputs")
        return None, None
    try:
        data = load_data(recipe["data"], image_size=recipe.get("image_size"), seed=int(recipe.get("seed") or 0),
                         cache_dir=cache_dir, progress=False)
        data = data.with_limits(None, recipe.get("val_limit"), int(recipe.get("seed") or 0))
    except UserError as exc:
        console.print(f"cannot read the model's data here ({exc}): comparing on random inputs")
        return None, None
    return validation_batch(data), "32 validation images"


def profile_command(args: argparse.Namespace, console: Console) -> int:
    """``autoprune profile``: on the deploy device, write its latency table for a model's space
    (``--out``), or time an exported model there (``--measure``), beside a table's estimate."""
    from autoprune.costs import CostSettings
    from autoprune.costs.table import load_device_table

    if args.measure:
        return _measure_on_device(args, console)
    if not args.out:
        raise UserError("autoprune profile needs --out FILE (the table to write) or --measure MODEL.pt")
    check_output_file(args.out, "--out")
    settings = SearchSettings(model=args.model, data=args.data, image_size=args.image_size, space=args.space,
                              granularity=args.granularity, latency_batch=args.latency_batch,
                              latency_threads=args.latency_threads, latency_warmup=args.latency_warmup,
                              latency_repeats=args.latency_repeats, cache_dir=args.cache_dir)
    import torch

    from autoprune.atomic import write_text_atomic
    from autoprune.costs.table import profile_device_table
    from autoprune.data import absolute_data_spec, load_data
    from autoprune.models import build_model
    from autoprune.pipeline import resolve_rules
    from autoprune.space import SearchSpace

    data = load_data(absolute_data_spec(settings.data), image_size=settings.image_size, cache_dir=settings.cache_dir)
    torch.manual_seed(args.seed)  # weights do not change latency: the architecture is all that is timed
    model = build_model(settings.model, num_classes=data.num_classes, in_channels=data.input_shape[0]).eval()
    example = torch.randn(1, *data.input_shape)
    space = SearchSpace.from_model(model, example, resolve_rules(settings))
    cost = CostSettings(tuple(data.input_shape), batch_size=settings.latency_batch, threads=settings.latency_threads,
                        warmup=settings.latency_warmup, repeats=settings.latency_repeats)
    blob = profile_device_table(model, space, example, cost, model_spec=settings.model,
                                calibration_policies=args.calibration, seed=args.seed,
                                log=lambda message: console.print(message, highlight=False, soft_wrap=True))
    write_text_atomic(Path(args.out), json.dumps(blob, indent=1))
    table = load_device_table(args.out)
    dense_estimate = table.estimate(model)
    console.print(f"wrote {args.out}: {len(blob['layers'])} layer shapes of {settings.model} "
                  f"({len(space.slots)} slots) on {blob['device']} in {blob['profile_seconds']:.0f} s; dense "
                  f"{blob['dense_ms']:.2f} ms measured, {dense_estimate:.2f} ms from the table. Search elsewhere with "
                  f"`autoprune search --latency-table {Path(args.out).name} --model {settings.model} ...`",
                  highlight=False, soft_wrap=True)
    return 0


def _measure_on_device(args: argparse.Namespace, console: Console) -> int:
    """Time an exported model here (the final check on the deploy device), beside a table's estimate."""
    import autoprune
    from autoprune.costs import CostSettings
    from autoprune.costs.latency import steady_latency
    from autoprune.costs.table import load_device_table
    from autoprune.prune import read_slimmed

    shape = tuple(int(v) for v in read_slimmed(args.measure)["input_shape"])
    model = autoprune.load(args.measure).eval()
    table = load_device_table(args.table) if args.table else None
    batch = table.batch_size if table else args.latency_batch
    threads = table.threads if table else args.latency_threads
    cost = CostSettings(shape, batch_size=batch, threads=threads, warmup=args.latency_warmup,
                        repeats=args.latency_repeats)
    measured = steady_latency(model, cost)
    line = f"{args.measure}: {measured:.2f} ms measured here ({cost.describe()})"
    if table is not None:
        estimate = table.estimate(model)
        line += f"; the table estimated {estimate:.2f} ms ({(estimate - measured) / measured:+.1%})"
    console.print(line, highlight=False, soft_wrap=True)
    return 0
