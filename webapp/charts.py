"""Plotly figures: verdict counts of a batch, and evaluation reports against the published systems."""

from __future__ import annotations

import plotly.graph_objects as go

from guardreasoner.results import PROMPT_HARMFULNESS, RESPONSE_HARMFULNESS, RESPONSE_REFUSAL
from stagekit.reports import published_f1

PUBLISHED = published_f1()


def verdict_counts(records: list[dict]) -> go.Figure:
    figure = go.Figure()
    titles = ((PROMPT_HARMFULNESS, "prompt harmful"), (RESPONSE_REFUSAL, "response refusal"),
              (RESPONSE_HARMFULNESS, "response harmful"))
    for key, title in titles:
        counts: dict[str, int] = {}
        for record in records:
            label = record["labels"].get(key) or "n/a"
            counts[label] = counts.get(label, 0) + 1
        figure.add_trace(go.Bar(name=title, x=list(counts), y=list(counts.values())))
    figure.update_layout(barmode="group", title="Verdicts", height=360, margin=dict(t=40, b=20))
    return figure


def benchmark_report(reports: dict[str, dict]) -> go.Figure:
    """Per-cell F1 of each uploaded report (the JSON ``eval score --json`` writes) beside the published systems."""
    figure = go.Figure()
    cells = []
    for report in reports.values():
        for cell in report["cells"]:
            name = f"{cell['benchmark']} ({cell['task']})"
            if name not in cells:
                cells.append(name)
    for name, report in reports.items():
        by_cell = {f"{c['benchmark']} ({c['task']})": c["f1"] for c in report["cells"]}
        figure.add_trace(go.Bar(name=f"{name} [{report['mode']}]", x=cells, y=[by_cell.get(c) for c in cells]))
    for system, figures in PUBLISHED.items():
        values = []
        for cell in cells:
            benchmark, task = cell[:-1].split(" (")
            values.append(figures.get(task, {}).get(benchmark))
        figure.add_trace(go.Bar(name=system, x=cells, y=values, opacity=0.55))
    # The legend under the chart: beside it, it takes half a phone's width.
    figure.update_layout(barmode="group", title="F1 (%) per cell", height=560, yaxis={"range": [0, 100]},
                         legend={"orientation": "h", "yanchor": "top", "y": -0.25, "xanchor": "left", "x": 0},
                         margin={"l": 40, "r": 10, "t": 50, "b": 10})
    return figure
