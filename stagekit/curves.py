"""The calibration and ranking curves of a report's cells, drawn from the report alone (``eval score`` keeps each
cell's reliability bins, ROC and precision-recall points): the page ``eval score`` writes beside a report and the
app's Benchmarks tab draw the same figure."""

from __future__ import annotations


def has_scores(cell: dict) -> bool:
    return cell.get("scored_rows") is not None


PANELS = ("Reliability", "ROC", "Precision-recall")
AXES = {"Reliability": ("mean probability in the bin", "share of positive rows", 1),
        "ROC": ("false-positive rate", "recall", 1.02), "Precision-recall": ("recall", "precision", 1.02)}


def curves_figure(report: dict, name: str = "this run", stacked: bool = False):
    """Reliability diagrams, ROC curves and precision-recall curves of every cell with probabilities, side by side
    (or, ``stacked``, one above the other: the app's layout, which a phone's width can hold), one colour per cell
    (clicking a cell in the legend hides its three curves); None where no cell has probabilities. A cell's
    ``benchmark`` may carry a report's name where several reports share the figure."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    cells = [cell for cell in report["cells"] if has_scores(cell)]
    if not cells:
        return None
    place = {panel: ({"row": index + 1, "col": 1} if stacked else {"row": 1, "col": index + 1})
             for index, panel in enumerate(PANELS)}
    figure = make_subplots(rows=3 if stacked else 1, cols=1 if stacked else 3, subplot_titles=PANELS,
                           **({"vertical_spacing": 0.08} if stacked else {"horizontal_spacing": 0.07}))
    for index, cell in enumerate(cells):
        label = f"{cell['benchmark']} ({cell['task']})"
        color = f"hsl({int(360 * index / len(cells))},65%,45%)"
        bins = cell["reliability"]
        figure.add_trace(go.Scatter(
            x=[b["mean_p"] for b in bins], y=[b["positive_share"] for b in bins], mode="lines+markers",
            name=f"{label}: ECE {cell['ece']:.3f}", legendgroup=label, line={"color": color},
            customdata=[b["rows"] for b in bins],
            hovertemplate="mean p %{x:.3f}<br>positive share %{y:.3f}<br>%{customdata} rows"), **place["Reliability"])
        if cell.get("roc"):
            figure.add_trace(go.Scatter(
                x=cell["roc"]["fpr"], y=cell["roc"]["tpr"], mode="lines", name=f"{label}: AUC {cell['roc_auc']:.3f}",
                legendgroup=label, line={"color": color, "shape": "hv"}), **place["ROC"])
        if cell.get("pr"):
            figure.add_trace(go.Scatter(
                x=cell["pr"]["recall"], y=cell["pr"]["precision"], mode="lines", legendgroup=label,
                name=f"{label}: AP {cell['average_precision']:.3f}", line={"color": color, "shape": "vh"}),
                **place["Precision-recall"])
    for panel in ("Reliability", "ROC"):
        figure.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"color": "grey", "dash": "dot"},
                                    showlegend=False, hoverinfo="skip"), **place[panel])
    for panel, (x_title, y_title, y_top) in AXES.items():
        figure.update_xaxes(range=[0, 1], title_text=x_title, **place[panel])
        figure.update_yaxes(range=[0, y_top], title_text=y_title, **place[panel])
    # the legend under the panels, as the F1 chart has it: beside them it leaves the panels no room
    if stacked:
        figure.update_layout(height=1100 + 22 * len(cells), title=f"Verdict probabilities — {name}",
                             legend={"orientation": "h", "yanchor": "top", "y": -0.06, "x": 0},
                             margin={"l": 50, "r": 10, "t": 60, "b": 10})
    else:
        figure.update_layout(height=560 + 22 * len(cells),
                             title=f"Calibration and ranking of the verdict probabilities — {name}",
                             legend={"orientation": "h", "yanchor": "top", "y": -0.18, "x": 0})
    return figure
