"""The calibration and ranking curves of a report's cells, drawn from the report alone (``eval score`` keeps each
cell's reliability bins, ROC and precision-recall points): the page ``eval score`` writes beside a report and the
app's Benchmarks tab draw the same figure."""

from __future__ import annotations


def has_scores(cell: dict) -> bool:
    return cell.get("scored_rows") is not None


def curves_figure(report: dict, name: str = "this run"):
    """Reliability diagrams (left), ROC curves (middle) and precision-recall curves (right) of every cell with
    probabilities, one colour per cell (clicking a cell in the legend hides its three curves); None where no cell
    has probabilities. A cell's ``benchmark`` may carry a report's name where several reports share the figure."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    cells = [cell for cell in report["cells"] if has_scores(cell)]
    if not cells:
        return None
    figure = make_subplots(rows=1, cols=3, subplot_titles=[
        "Reliability", "ROC", "Precision-recall"], horizontal_spacing=0.07)
    for index, cell in enumerate(cells):
        label = f"{cell['benchmark']} ({cell['task']})"
        color = f"hsl({int(360 * index / len(cells))},65%,45%)"
        bins = cell["reliability"]
        figure.add_trace(go.Scatter(
            x=[b["mean_p"] for b in bins], y=[b["positive_share"] for b in bins], mode="lines+markers",
            name=f"{label}: ECE {cell['ece']:.3f}", legendgroup=label, line={"color": color},
            customdata=[b["rows"] for b in bins],
            hovertemplate="mean p %{x:.3f}<br>positive share %{y:.3f}<br>%{customdata} rows"), row=1, col=1)
        if cell.get("roc"):
            figure.add_trace(go.Scatter(
                x=cell["roc"]["fpr"], y=cell["roc"]["tpr"], mode="lines", name=f"{label}: AUC {cell['roc_auc']:.3f}",
                legendgroup=label, line={"color": color, "shape": "hv"}), row=1, col=2)
        if cell.get("pr"):
            figure.add_trace(go.Scatter(
                x=cell["pr"]["recall"], y=cell["pr"]["precision"], mode="lines", legendgroup=label,
                name=f"{label}: AP {cell['average_precision']:.3f}", line={"color": color, "shape": "vh"}),
                row=1, col=3)
    for col in (1, 2):
        figure.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"color": "grey", "dash": "dot"},
                                    showlegend=False, hoverinfo="skip"), row=1, col=col)
    figure.update_xaxes(range=[0, 1], title_text="mean probability in the bin", row=1, col=1)
    figure.update_yaxes(range=[0, 1], title_text="share of positive rows", row=1, col=1)
    figure.update_xaxes(range=[0, 1], title_text="false-positive rate", row=1, col=2)
    figure.update_yaxes(range=[0, 1.02], title_text="recall", row=1, col=2)
    figure.update_xaxes(range=[0, 1], title_text="recall", row=1, col=3)
    figure.update_yaxes(range=[0, 1.02], title_text="precision", row=1, col=3)
    # the legend under the panels, as the F1 chart has it: three panels leave no room beside them
    figure.update_layout(height=560 + 22 * len(cells), title=f"Calibration and ranking of the verdict probabilities"
                         f" — {name}", legend={"orientation": "h", "yanchor": "top", "y": -0.18, "x": 0})
    return figure
