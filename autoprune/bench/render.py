"""``autoprune bench --render RUN_DIR``: write BENCHMARKS.md again from a run's ``results.json``.

A bench run takes hours; its report and figures are made from plain numbers that the harness
saves after every search (``results.json``). Rendering again needs no search: after an
interruption (the report then covers the runs that finished), or to regenerate the figures. The
configuration is rebuilt from the command the run recorded, so the report names that command.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
from pathlib import Path
from typing import Any

from autoprune.errors import UserError


def load_result(run_dir: Path, parser: argparse.ArgumentParser):
    """The ``BenchResult`` of a finished or interrupted run, without its live problems."""
    from autoprune.bench.command import bench_config
    from autoprune.bench.harness import BenchResult, RunResult, TaskSetup
    from autoprune.settings import settings_from_dict

    path = run_dir / "results.json"
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} does not exist; --render takes a bench run directory (benchmarks/runs/<stamp>)") from None
    except ValueError as exc:
        raise UserError(f"{path} is not valid JSON ({exc}); the run may have been cut off while saving") from None
    command = str(data.get("command", "autoprune bench"))
    argv = _without_searchers(shlex.split(command)[2:])  # past "autoprune bench"
    argv.append("--render=" + str(run_dir))
    cfg = bench_config(parser.parse_args(["bench", *argv]), command)
    # The searchers the command asked for, in its order (those without a run yet are listed
    # missing), then any other the runs name (one unregistered since then still renders): a unit
    # run again (``--redo``) is saved last but keeps its row.
    searchers = tuple(dict.fromkeys([*_recorded_searchers(shlex.split(command)[2:]),
                                     *(str(r["searcher"]) for r in data["runs"])])) or cfg.searchers
    cfg = dataclasses.replace(cfg, searchers=searchers)
    tasks = [TaskSetup(t["name"], t["study"], settings_from_dict(t["settings"], t["study"]), t["dense"], None, t["error"])
             for t in data["tasks"]]
    runs = [RunResult(**{**r, "points": [tuple(p) for p in r.get("points", [])]}) for r in data["runs"]]
    return BenchResult(cfg, data["machine"], tasks, runs, data.get("time_limits", {}), data.get("fidelity"),
                       data.get("throughput") or [], run_dir, data["storage"], float(data.get("elapsed_s", 0.0)),
                       data.get("finetune"))


def _recorded_searchers(argv: list[str]) -> list[str]:
    """The registered searchers a recorded bench command asked for (``headline`` by default)."""
    from autoprune.bench.command import bench_searchers
    from autoprune.searchers import searcher_names

    text = None
    for i, arg in enumerate(argv):
        if arg == "--searchers" and i + 1 < len(argv):
            text = argv[i + 1]
        elif arg.startswith("--searchers="):
            text = arg.split("=", 1)[1]
    registered = searcher_names()
    if text in (None, "headline", "all"):
        return list(bench_searchers(text, registered))
    return [n.strip() for n in text.split(",") if n.strip() in registered]


def _without_searchers(argv: list[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--searchers":
            skip = True
        elif not arg.startswith("--searchers="):
            out.append(arg)
    return out


def merge(results: list) -> Any:
    """One report from several runs (an interrupted bench, then the sections, tasks or searchers
    it had left, or a searcher run again after a fix).

    Each (task, searcher) pair's searches come from the last run that searched it: a pair run
    again supersedes its earlier searches rather than mixing seeds of two runs. A task's
    description and time budget come from the last run that searched it; a pair kept from an
    earlier run must have been searched at that same time budget, or the equal-time view would
    compare searchers at different budgets (a ``UserError`` says which ``--time-limit`` to give).
    The fidelity, fine-tune curve and throughput sections come from the first run that has them.
    The merged command is the ``--render`` that regenerates the report; each section names the
    command (and machine) of the run behind it, and the header lists every run."""
    first = results[0]
    if len(results) == 1:
        return first
    searchers = tuple(dict.fromkeys(s for r in results for s in r.config.searchers))
    command = "autoprune bench --render " + " ".join(shlex.quote(str(r.root)) for r in results)
    cfg = dataclasses.replace(first.config, searchers=searchers, command=command,
                              seeds=max(r.config.seeds for r in results))
    tasks: dict[str, Any] = {}
    task_source: dict[str, Any] = {}  # task name -> the last result that searched it
    pair_source: dict[tuple[str, str], Any] = {}  # (task, searcher) -> the last result that searched it
    for r in results:
        for t in r.tasks:
            if any(run.task == t.name for run in r.runs):
                tasks[t.name], task_source[t.name] = t, r
            else:
                tasks.setdefault(t.name, t)
        for run in r.runs:
            pair_source[(run.task, run.searcher)] = r
    for (task, searcher), r in pair_source.items():
        latest = task_source[task]
        ours, theirs = r.time_limits.get(task), latest.time_limits.get(task)
        if r is not latest and ours is not None and theirs is not None and abs(ours - theirs) > 0.01:
            raise UserError(
                f"{task}: {searcher} was searched in {r.root} with a {ours:.3f} s time budget, but {latest.root} "
                f"used {theirs:.3f} s; run the later one again with --time-limit {ours:.3f}, or every searcher of the task")
    runs = [run for r in results for run in r.runs if pair_source[(run.task, run.searcher)] is r]
    time_limits = {name: r.time_limits[name] for name, r in task_source.items() if name in r.time_limits}
    fidelity = next((r for r in results if r.fidelity), None)
    throughput = next((r for r in results if r.throughput), None)
    finetune = next((r for r in results if r.finetune), None)
    behind = {f"task:{name}": r for name, r in task_source.items()}
    behind.update({key: r for key, r in (("fidelity", fidelity), ("throughput", throughput), ("finetune", finetune))
                   if r is not None})
    # the dense table is read by every run of a task: name the run(s) whose tasks it shows
    dense = [r for r in results if any(r is source for source in task_source.values())] or [first]
    sources = {key: (r.config.command, r.machine) for key, r in behind.items()}
    sources["dense"] = ("; ".join(r.config.command for r in dense), dense[-1].machine)
    parts = [{"root": str(r.root), "command": r.config.command, "machine": r.machine,
              "sections": [key for key, source in behind.items() if source is r]} for r in results]
    return dataclasses.replace(
        first, config=cfg, tasks=list(tasks.values()), runs=runs, time_limits=time_limits,
        fidelity=fidelity.fidelity if fidelity else None, throughput=throughput.throughput if throughput else [],
        finetune=finetune.finetune if finetune else None,
        root=" and ".join(str(r.root) for r in results), storage=" and ".join(r.storage for r in results),
        elapsed_s=sum(r.elapsed_s for r in results), parts=parts, sources=sources,
    )


def render(run_dirs: list[Path], parser: argparse.ArgumentParser, log=print,
           out: Path | None = None, figures_dir: Path | None = None) -> Path:
    """Write the merged report; to ``out`` (figures to ``figures_dir``) where given, else where the
    recorded command wrote it, so a draft can be rendered without touching the committed one."""
    from autoprune.bench.command import figures_beside
    from autoprune.bench.markdown import write_markdown

    results = [load_result(d, parser) for d in run_dirs]
    merged = merge(results)
    if out is not None or figures_dir is not None:
        report = out or merged.config.out
        figures = figures_dir or (figures_beside(report) if out is not None else merged.config.figures_dir)
        merged = dataclasses.replace(merged, config=dataclasses.replace(merged.config, out=report, figures_dir=figures))
    out = write_markdown(merged)
    log(f"wrote {out} from {', '.join(str(d / 'results.json') for d in run_dirs)} "
        f"({sum(len(r.runs) for r in results)} search runs)")
    return out
