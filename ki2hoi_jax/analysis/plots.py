"""The figures of an evaluation (matplotlib, Agg canvas, no pyplot state).

Each function returns a plain `matplotlib.figure.Figure`; in a notebook,
`%matplotlib inline` displays it.

  plot_per_hoi_ap         AP per HOI class, by training frequency
  plot_precision_recall   precision-recall curves of a few classes
  plot_seen_unseen        mean and per-class AP of the seen / unseen groups
"""

from typing import Mapping

from matplotlib import figure
from matplotlib import patches
from matplotlib import ticker
from matplotlib.backends import backend_agg
import numpy as np

from ki2hoi_jax.analysis import per_class
from ki2hoi_jax.analysis import tables

# Colours of the plots (matplotlib's tab10).
_SEEN_COLOUR = "#1f77b4"
_RARE_COLOUR = "#ff7f0e"
_UNSEEN_COLOUR = "#d62728"


def _figure(width: float, height: float, ncols: int = 1):
  """A Figure on the Agg canvas and its axes (no pyplot)."""
  fig = figure.Figure(figsize=(width, height), layout="constrained")
  backend_agg.FigureCanvasAgg(fig)
  axes = fig.subplots(1, ncols)
  return fig, axes


def plot_per_hoi_ap(freq: per_class.PerHoiFrequency, title: str = ""):
  """Bars of AP per HOI, most frequent in training on the left.

  Bars are coloured by group (seen non-rare / rare / unseen); a line on a
  second (log) axis shows the training pair count.

  Returns:
    The matplotlib Figure.
  """
  n = len(freq.names)
  fig, ax = _figure(max(6.0, min(16.0, 0.25 * n + 4.0)), 4.0)
  x = np.arange(n)
  colours = [(_UNSEEN_COLOUR if u else _RARE_COLOUR if r else _SEEN_COLOUR)
             for u, r in zip(freq.unseen, freq.rare)]
  ax.bar(x, freq.ap, color=colours, width=0.8)
  ax.set_xlabel("HOI classes with test GT, by training frequency (rank)")
  ax.set_ylabel("AP (%)")
  ax.set_ylim(0, max(1.0, float(np.nanmax(freq.ap)) * 1.1 if n else 1.0))
  if n <= 40:
    ax.set_xticks(x)
    ax.set_xticklabels(freq.names, rotation=90, fontsize=7)
  ax2 = ax.twinx()
  ax2.plot(x, np.maximum(freq.train_count, 0.5), color="black", lw=1,
           marker="." if n <= 100 else None)
  ax2.set_yscale("log")
  ax2.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
  ax2.yaxis.set_minor_formatter(ticker.NullFormatter())
  ax2.set_ylabel("training pairs")
  handles = [patches.Patch(color=_SEEN_COLOUR, label="seen, non-rare"),
             patches.Patch(color=_RARE_COLOUR, label="rare"),
             patches.Patch(color=_UNSEEN_COLOUR, label="unseen")]
  ax.legend(handles=handles, loc="upper right", fontsize=8)
  ax.set_title(title or f"AP per HOI ({n} classes)")
  return fig


def plot_precision_recall(curves: Mapping[int, per_class.PRCurve],
                          title: str = ""):
  """Precision-recall curves, one line per class (AP in the legend).

  Each line goes through the (recall, precision) point after each of the
  class's ranked predictions.

  Returns:
    The matplotlib Figure.
  """
  fig, ax = _figure(6.0, 4.5)
  for curve in curves.values():
    label = f"{curve.name} (AP {curve.ap:.1f}, {curve.num_gt} GT)"
    if curve.recall.size:
      ax.plot(curve.recall, curve.precision, label=label,
              marker="." if curve.recall.size <= 100 else None)
    else:
      ax.plot([], [], label=label + ", no predictions")
  ax.set_xlim(-0.02, 1.04)
  ax.set_ylim(-0.02, 1.04)
  ax.set_xlabel("recall")
  ax.set_ylabel("precision")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc="upper right")
  ax.set_title(title or "Precision-recall")
  return fig


def plot_seen_unseen(summary: Mapping[str, tables.GroupStats],
                     title: str = ""):
  """Mean AP bars (left) and per-class AP box plots (right) of each group.

  Returns:
    The matplotlib Figure.
  """
  fig, (ax1, ax2) = _figure(9.0, 4.0, ncols=2)
  groups = [g for g in summary.values()]
  names = [f"{g.name}\n({g.num_classes})" for g in groups]
  colours = [{"unseen": _UNSEEN_COLOUR, "seen": _SEEN_COLOUR}.get(
      g.name, "grey") for g in groups]
  means = [0.0 if g.mean_ap is None else g.mean_ap for g in groups]
  ax1.bar(np.arange(len(groups)), means, color=colours)
  for i, m in enumerate(means):
    ax1.text(i, m, f"{m:.2f}", ha="center", va="bottom", fontsize=9)
  ax1.set_xticks(np.arange(len(groups)))
  ax1.set_xticklabels(names)
  ax1.set_ylabel("mAP (%)")
  ax1.set_ylim(0, max(1.0, max(means) * 1.2))
  ax1.set_title("mean AP")
  data = [g.ap if g.ap.size else np.zeros(0) for g in groups]
  ax2.boxplot(data, showmeans=True)
  top = max([float(np.max(d)) for d in data if d.size] + [1.0])
  ax2.set_ylim(-0.02 * top, 1.1 * top)
  ax2.set_xticks(np.arange(1, len(groups) + 1))
  ax2.set_xticklabels(names)
  ax2.set_ylabel("AP (%)")
  ax2.set_title("AP per class")
  fig.suptitle(title or "Seen vs unseen")
  return fig

