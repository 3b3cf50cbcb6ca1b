"""Reports of a scored run: a markdown table in the paper's layout and a plotly page against published systems."""

from __future__ import annotations

from guardreasoner.results import PROMPT_HARMFULNESS, RESPONSE_HARMFULNESS, RESPONSE_REFUSAL
from stagekit.metrics import (
    all_positive_f1,
    all_positive_interval,
    balanced_accuracy,
    mean_cell_f1,
    mean_over_cells,
)
from stagekit.reports import published_f1

from .calibration import markdown_table as calibration_table
from .registry import CELLS, TASKS

PUBLISHED = published_f1()
TASK_TITLES = {PROMPT_HARMFULNESS: "Prompt harmfulness", RESPONSE_HARMFULNESS: "Response harmfulness",
               RESPONSE_REFUSAL: "Refusal detection"}


def _cell_f1(report: dict) -> dict[tuple[str, str], dict]:
    return {(c["benchmark"], c["task"]): c for c in report["cells"]}


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def to_markdown(report: dict, name: str = "this run") -> str:
    scored = _cell_f1(report)
    lines = [f"# F1 (%), {report['mode']} scoring — {name}", ""]
    for task in TASKS:
        benchmarks = [c.benchmark for c in CELLS if c.task == task]
        summary = report["tasks"][task]
        lines += [f"## {TASK_TITLES[task]}", "",
                  "| system | " + " | ".join(benchmarks) + " | W.Avg |",
                  "|---" * (len(benchmarks) + 2) + "|"]
        row = []
        for benchmark in benchmarks:
            cell = scored.get((benchmark, task))
            text = _fmt(cell["f1"] if cell else None)
            if cell and cell.get("ci95"):
                text += f" ({cell['ci95'][0]:.1f}–{cell['ci95'][1]:.1f})"
            row.append(text)
        average = _fmt(summary["f1"]) + (" (partial)" if summary["partial"] else "")
        lines.append(f"| **{name}** | " + " | ".join(row) + f" | {average} |")
        for system, figures in PUBLISHED.items():
            if task in figures:
                published = [_fmt(figures[task].get(b)) for b in benchmarks]
                lines.append(f"| {system} | " + " | ".join(published) + f" | {_fmt(figures[task]['avg'])} |")
        lines.append("")
    overall = _fmt(report["overall"]) + (" (partial)" if report["overall_partial"] else "")
    lines.append(f"Overall (mean of the three task averages): **{overall}**")
    if report["missing"]:
        lines += ["", "Missing cells: " + ", ".join(f"{m['benchmark']} ({m['task']})" for m in report["missing"])]
    if report["mode"] == "strict":
        lines += ["", "| cell | n | parse failures | tokens/row | ms/row |", "|---|---|---|---|---|"]
        for cell in report["cells"]:
            tokens = cell.get("mean_output_tokens")
            ms = cell.get("mean_ms_per_row")
            lines.append(f"| {cell['benchmark']} ({cell['task']}) | {cell['n']} | {cell['parse_failures']} "
                         f"| {_fmt(tokens)} | {_fmt(ms)} |")
    calibration = calibration_table(report)
    if calibration:
        lines += ["", "Verdict probabilities (recall in %; ECE over ten equal-width bins):", "", *calibration]
    return "\n".join(lines) + "\n"


def to_html(report: dict, name: str = "this run") -> str:
    """A self-contained page (plotly.js inlined, nothing fetched) comparing the run with published systems."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    scored = _cell_f1(report)
    figure = make_subplots(rows=2, cols=2, subplot_titles=[TASK_TITLES[t] for t in TASKS] + ["Task averages"],
                           vertical_spacing=0.15)
    positions = {PROMPT_HARMFULNESS: (1, 1), RESPONSE_HARMFULNESS: (1, 2), RESPONSE_REFUSAL: (2, 1)}
    systems = {name: None, **PUBLISHED}
    for index, system in enumerate(systems):
        color = f"hsl({int(360 * index / len(systems))},60%,50%)"
        for task, (row, col) in positions.items():
            benchmarks = [c.benchmark for c in CELLS if c.task == task]
            if system == name:
                values = [scored.get((b, task), {}).get("f1") for b in benchmarks]
            elif task in PUBLISHED[system]:
                values = [PUBLISHED[system][task].get(b) for b in benchmarks]
            else:
                continue
            figure.add_trace(go.Bar(name=system, x=benchmarks, y=values, marker_color=color, legendgroup=system,
                                    showlegend=task == PROMPT_HARMFULNESS), row=row, col=col)
        averages = ([report["tasks"][t]["f1"] for t in TASKS] if system == name
                    else [PUBLISHED[system].get(t, {}).get("avg") for t in TASKS])
        figure.add_trace(go.Bar(name=system, x=list(TASKS), y=averages, marker_color=color, legendgroup=system,
                                showlegend=False), row=2, col=2)
    figure.update_layout(barmode="group", height=900, title=f"F1 (%) — {name} ({report['mode']} scoring) vs published")
    figure.update_yaxes(range=[0, 100])
    return figure.to_html(full_html=True, include_plotlyjs=True)


def joined_report(parts: list[dict]) -> dict:
    """One system's report from several scored on different benchmarks (e.g. two processes, one per core, each with
    its own run folder): the union of their cells. A cell scored in two parts is refused, not picked from."""
    cells: dict[tuple[str, str], dict] = {}
    for part in parts:
        for key, cell in _cell_f1(part).items():
            if key in cells:
                raise ValueError(f"{key[0]} ({key[1]}) is scored in more than one report of the same system")
            cells[key] = cell
    # Only what is derived from the joined cells: a part's own task means and overall would be stale here.
    return {"mode": parts[0]["mode"], "run": [part["run"] for part in parts], "cells": list(cells.values()),
            "missing": [m for m in parts[0]["missing"] if (m["benchmark"], m["task"]) not in cells]}


def compare_markdown(reports: dict[str, dict]) -> str:
    """One table for several scored runs on the same rows: F1 (95% interval) per cell and the mean over the
    cells, then rows and ms/row.

    Cells scored in only some runs are shown with a dash (and the mean says over how many cells it is); a cell
    whose row counts differ between runs is marked, since its figures are then not comparable."""
    keys = [(c.benchmark, c.task) for c in CELLS if any((c.benchmark, c.task) in _cell_f1(r) for r in reports.values())]
    scored = {name: _cell_f1(report) for name, report in reports.items()}
    header = [f"{benchmark} ({task})" for benchmark, task in keys]
    lines = ["| system | " + " | ".join(header) + " | mean |", "|---" * (len(keys) + 2) + "|"]
    for name, cells in scored.items():
        row = []
        for key in keys:
            cell = cells.get(key)
            text = _fmt(cell["f1"] if cell else None)
            if cell and cell.get("ci95"):
                text += f" ({cell['ci95'][0]:.1f}–{cell['ci95'][1]:.1f})"
            row.append(text)
        mean = _fmt(mean_cell_f1(reports[name]))
        partial = sum(cells[key].get("f1") is not None for key in keys if key in cells)
        row.append(mean if partial == len(keys) else f"{mean} ({partial} of {len(keys)} cells)")
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    reference = _all_positive_row(keys, scored)
    if reference:
        lines.append(reference)
    lines += ["", "| system | " + " | ".join(f"n / ms per row: {h}" for h in header) + " |",
              "|---" * (len(keys) + 1) + "|"]
    for name, cells in scored.items():
        row = [f"{cells[k]['n']} / {_fmt(cells[k].get('mean_ms_per_row'))}" if k in cells else "—" for k in keys]
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    if any(balanced_accuracy(cell) is not None for cells in scored.values() for cell in cells.values()):
        lines += ["", "| system | " + " | ".join(f"balanced accuracy: {h}" for h in header) + " | mean |",
                  "|---" * (len(keys) + 2) + "|"]
        for name, cells in scored.items():
            row = [_fmt(balanced_accuracy(cells[k])) if k in cells else "—" for k in keys]
            mean = _fmt(mean_over_cells(reports[name], balanced_accuracy))
            row.append(mean if len(cells) >= len(keys) else f"{mean} ({len(cells)} of {len(keys)} cells)")
            lines.append(f"| {name} | " + " | ".join(row) + " |")
    counts = {key: {cells[key]["n"] for cells in scored.values() if key in cells} for key in keys}
    uneven = [f"{b} ({t})" for b, t in keys if len(counts[(b, t)]) > 1]
    if uneven:
        lines += ["", "Not comparable (different row counts): " + ", ".join(uneven)]
    return "\n".join(lines) + "\n"


def _all_positive_row(keys: list[tuple[str, str]], scored: dict[str, dict]) -> str | None:
    """The reference row: every labelled row called positive, on the rows of the first system that scored each
    cell strictly (the systems compared share their rows)."""
    row, values = [], []
    for key in keys:
        cell = next((cells[key] for cells in scored.values() if key in cells and cells[key].get("confusion")), None)
        value = all_positive_f1(cell) if cell else None
        values.append(value)
        if value is None:
            row.append("—")
            continue
        confusion = cell["confusion"]
        low, high = all_positive_interval(confusion["tp"] + confusion["fn"], confusion["fp"] + confusion["tn"])
        row.append(f"{value:.2f} ({low:.1f}–{high:.1f})")
    if all(value is None for value in values):
        return None
    mean = _fmt(sum(values) / len(values)) if None not in values else "—"
    return "| all positive (reference) | " + " | ".join(row) + f" | {mean} |"
