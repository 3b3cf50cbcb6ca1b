"""The Benchmarks tab: read uploaded evaluation reports, chart the good ones, and say what is missing or bad."""

from __future__ import annotations

import json
from pathlib import Path

from stagekit.curves import curves_figure, has_scores
from stagekit.reports import current_report

NOT_A_REPORT = "not an evaluation report (the JSON file that python -m eval score --json writes)"


def read_reports(files) -> tuple[dict[str, dict], list[str]]:
    """Good reports by name, and one line per file that is not a report (so one bad file hides nothing)."""
    reports, bad = {}, []
    for file in files or []:
        path = Path(file)
        try:
            report = current_report(json.loads(path.read_text()), path.name)
            if not isinstance(report.get("cells"), list):
                raise KeyError("cells")
            reports[path.stem] = report
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
            bad.append(f"{path.name} is {NOT_A_REPORT}, so it is not charted.")
    return reports, bad


def describe(reports: dict[str, dict], bad: list[str]) -> str:
    """Per report: the cells it lacks and the averages that are therefore partial (the CLI's word)."""
    lines = []
    for name, report in reports.items():
        missing = [f"{m['benchmark']} ({m['task']})" for m in report.get("missing", [])]
        partial = [task for task, summary in report.get("tasks", {}).items() if summary.get("partial")]
        if report.get("overall_partial"):
            partial.append("overall")
        text = f"**{name}**: {len(report['cells'])} cells charted"
        if missing:
            text += f"; no result for {len(missing)} cells ({', '.join(missing)})"
        if partial:
            text += f", so these averages are partial: {', '.join(partial)}"
        scored = sum(has_scores(cell) for cell in report["cells"])
        text += (f". {scored} of its cells carry verdict probabilities: their curves are in the second chart" if scored
                 else ". No cell carries verdict probabilities, so it has no calibration curves")
        lines.append(f"- {text}.")
    lines += [f"- {line}" for line in bad]
    return "\n".join(lines)


def curves(reports: dict[str, dict]):
    """The reliability, ROC and precision-recall curves of every uploaded report's cells that carry probabilities,
    in one figure (each cell named by its report where there are several); None where no cell has any."""
    several = len(reports) > 1
    cells = [{**cell, "benchmark": f"{name}: {cell['benchmark']}" if several else cell["benchmark"]}
             for name, report in reports.items() for cell in report["cells"]]
    return curves_figure({"cells": cells}, ", ".join(reports), stacked=True)  # a phone holds one panel across
