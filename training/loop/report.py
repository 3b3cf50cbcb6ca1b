"""A round's report as files: the JSON itself, a markdown page a person reads, and a plotly chart of the cells.

The markdown says what came in (new inputs, corrections, what was left out and why, conflicts), what the heads
learnt, the gate's cells (shipped and candidate strict F1 with their 95% intervals, the difference, pass or
fail), the corrections now answered as corrected and those still wrong (with why), the custom policies refitted
(out-of-fold F1 on their own examples, served against refit, and their corrections), and the outcome.
"""

from __future__ import annotations

import json


def _interval(scored: dict) -> str:
    return f"{scored['f1']:.2f} [{scored['ci95'][0]:.2f}, {scored['ci95'][1]:.2f}]"


def to_markdown(report: dict) -> str:
    lines = [f"# Round {report['round']}: {report['outcome']}", ""]
    if report.get("version"):
        lines.append(f"Shipped **{report['version']}** (replacing {report.get('parent')}).")
    else:
        lines.append(f"Nothing shipped; {report.get('parent') or 'the shipped screen'} stays served.")
    lines += [f"{sentence}" for sentence in report.get("said", [])]
    collected = report.get("collect", {})
    lines += ["", "## What came in", "",
              f"- flags in the queue: {collected.get('seen', {}).get('flags', 0)}; reviews on the server: "
              f"{collected.get('seen', {}).get('reviews', 0)}",
              f"- new inputs: {collected.get('new_inputs', 0)}; new corrections: {collected.get('corrections', 0)}; "
              f"corrections in all (the regression set): {report.get('corrections_total', 0)}"]
    lines += [f"- note: {note}" for note in collected.get("notes", [])]
    left_out = report.get("left_out", [])
    if left_out:
        lines += ["", "## Left out", "", "| input | source | why |", "|---|---|---|"]
        lines += [f"| {entry['id']} | {entry['source']} | {entry['reason']} |" for entry in left_out]
    learn = report.get("learn")
    if learn:
        lines += ["", "## Learnt", "",
                  f"- heads refitted on {learn['rows']} fit rows and {learn['corrections_trained']} corrections "
                  f"({learn['fits']} fit(s), {learn['wall_s']:.1f} s; features computed for {learn['computed']} "
                  f"new items)", "", "| verdict | temperature | cut | validation F1 at cut |", "|---|---|---|---|"]
        for key, entry in learn["validation"].items():
            lines.append(f"| {key} | {entry.get('temperature', '')} | {entry.get('cut', '')} | "
                         f"{entry.get('f1_at_cut', entry.get('kept', ''))} |")
    gate = report.get("gate")
    if gate:
        lines += ["", "## Gate: strict F1 per cell, reasoning off (95% bootstrap intervals)", "",
                  "| benchmark | task | rows | shipped | candidate | delta | |", "|---|---|---|---|---|---|---|"]
        for cell in gate["cells"]:
            if "skipped" in cell:
                lines.append(f"| {cell['benchmark']} | {cell['task']} | 0 | | | | {cell['skipped']} |")
                continue
            lines.append(f"| {cell['benchmark']} | {cell['task']} | {cell['n']} | {_interval(cell['shipped'])} | "
                         f"{_interval(cell['candidate'])} | {cell['delta']:+.2f} | "
                         f"{'ok' if cell['passed'] else 'BELOW'} |")
        fixed, wrong = gate["corrections"]["fixed"], gate["corrections"]["still_wrong"]
        lines += ["", f"## Corrections: {len(fixed)} answered as corrected, {len(wrong)} verdict(s) still wrong", ""]
        if wrong:
            lines += ["| item | verdict | expected | candidate (p) | shipped (p) | why |", "|---|---|---|---|---|---|"]
            lines += [f"| {entry['key']} | {entry['verdict']} | {entry['expected']} | {entry['candidate']} "
                      f"({entry['candidate_p']}) | {entry['shipped']} ({entry['shipped_p']}) | {entry['why']} |"
                      for entry in wrong]
    lines += _policy_lines(report.get("policies") or [])
    if gate and gate["reasons"]:
        lines += ["", "## Why it was refused", ""] + [f"- {reason}" for reason in gate["reasons"]]
    dpo = report.get("dpo")
    if dpo:
        lines += ["", "## Reasoning model", "", f"- {dpo['pairs']} weighted DPO pair(s) written to {dpo['file']}",
                  f"- {dpo['hs_dpo']}"]
    return "\n".join(lines) + "\n"


def _policy_lines(policies: list[dict]) -> list[str]:
    if not policies:
        return []
    lines = ["", "## Custom policies: out-of-fold F1 on their own examples (95% bootstrap intervals)", "",
             "| policy | corrections | examples compared | served | refit | delta | fixed | still wrong | |",
             "|---|---|---|---|---|---|---|---|---|"]
    for entry in policies:
        if "shipped" not in entry:
            lines.append(f"| {entry['policy']} | {entry['corrections']} | | | | | | | "
                         f"{entry.get('skipped') or entry.get('error')} |")
            continue
        lines.append(f"| {entry['policy']} | {entry['corrections']} | {entry['compared_on']} | "
                     f"{_interval(entry['shipped'])} | {_interval(entry['candidate'])} | {entry['delta']:+.2f} | "
                     f"{len(entry['fixed'])} | {len(entry['still_wrong'])} | {'ok' if entry['passed'] else 'BELOW'} |")
    wrong = [(entry["policy"], item) for entry in policies for item in entry.get("still_wrong", [])]
    if wrong:
        lines += ["", "| policy | item | expected | refit p | why |", "|---|---|---|---|---|"]
        lines += [f"| {name} | {item['key']} | {item['expected']} | {item['p']} | {item['why']} |"
                  for name, item in wrong]
    return lines


def chart_html(report: dict) -> str | None:
    """Shipped and candidate strict F1 per cell with their intervals, one self-contained page (nothing fetched);
    None when the round reached no gate."""
    gate = report.get("gate")
    if not gate:
        return None
    import plotly.graph_objects as go

    cells = [cell for cell in gate["cells"] if "skipped" not in cell]
    names = [f"{cell['benchmark']}<br>{cell['task']}" for cell in cells]
    figure = go.Figure()
    for name, colour in (("shipped", "#7f7f7f"), ("candidate", "#1f77b4")):
        f1 = [cell[name]["f1"] for cell in cells]
        figure.add_bar(name=name, x=names, y=f1, marker_color=colour, error_y={
            "type": "data", "symmetric": False,
            "array": [cell[name]["ci95"][1] - value for cell, value in zip(cells, f1)],
            "arrayminus": [value - cell[name]["ci95"][0] for cell, value in zip(cells, f1)]})
    figure.update_layout(barmode="group", title=f"Round {report['round']}: strict F1 per cell, reasoning off "
                         f"({report['outcome']})", yaxis_title="strict F1 (95% interval)")
    return figure.to_html(full_html=True, include_plotlyjs=True)


def card_files(report: dict) -> dict[str, str]:
    files = {"report.json": json.dumps(report, indent=2, ensure_ascii=False) + "\n",
             "report.md": to_markdown(report)}
    chart = chart_html(report)
    if chart is not None:
        files["chart.html"] = chart
    return files


def changelog_entry(report: dict) -> str:
    gate = report["gate"]
    moved = [cell for cell in gate["cells"] if cell.get("delta")]
    lines = [f"## {report['version']} (round {report['round']}, {report['at']})", "",
             f"- {report['collect']['corrections']} new correction(s), {report['corrections_total']} in all; "
             f"{len(gate['corrections']['fixed'])} answered as corrected, "
             f"{len(gate['corrections']['still_wrong'])} verdict(s) still wrong"]
    lines += [f"- {cell['benchmark']} {cell['task']}: {cell['shipped']['f1']:.2f} -> {cell['candidate']['f1']:.2f}"
              for cell in moved]
    lines += [f"- policy {entry['policy']} refitted with {entry['corrections']} correction(s): out-of-fold F1 "
              f"{entry['shipped']['f1']:.2f} -> {entry['candidate']['f1']:.2f}"
              for entry in report.get("policies") or [] if entry.get("passed") and "shipped" in entry]
    return "\n".join(lines) + "\n"
