"""Analysis of an evaluated HICO-DET run (the logic of experiments/*.ipynb).

The notebooks `experiments/evaluate.ipynb` and `experiments/zero_shot.ipynb`
only call this package, through the flat API below (`from ki2hoi_jax import
analysis; analysis.load_run(...)`); everything is tested in
tests/test_analysis.py.

  runs.py         workdir layout, `load_run` / `ensure_evaluated` -> `Run`
  hoi_metrics.py  per-HOI values of the evaluator's metrics, class subsets
  tables.py       mAP, seen/unseen, transfer tables (pandas DataFrames)
  per_class.py    AP by training frequency, precision-recall curves
  plots.py        matplotlib figures of the above
  gallery.py      a grid of predictions on test images

All AP and recall values are in percent, as in the evaluator's metrics. Only
HICO-DET runs are supported (V-COCO metrics have another layout). Tables are
`pandas.DataFrame`s with their caption in `attrs['title']`. Figures are plain
`matplotlib.figure.Figure`s on the Agg canvas (no pyplot state); in a
notebook, `%matplotlib inline` displays them. The trainer (TensorFlow input
pipeline) and the predictor are imported only when a checkpoint has to be
evaluated or run.
"""

from ki2hoi_jax.analysis.gallery import draw_record
from ki2hoi_jax.analysis.gallery import prediction_grid
from ki2hoi_jax.analysis.gallery import PredictionGrid
from ki2hoi_jax.analysis.gallery import read_predict_outputs
from ki2hoi_jax.analysis.hoi_metrics import hoi_training_counts
from ki2hoi_jax.analysis.hoi_metrics import metrics_split
from ki2hoi_jax.analysis.hoi_metrics import most_frequent_test_hois
from ki2hoi_jax.analysis.hoi_metrics import per_hoi
from ki2hoi_jax.analysis.per_class import per_hoi_ap_sorted_by_frequency
from ki2hoi_jax.analysis.per_class import PerHoiFrequency
from ki2hoi_jax.analysis.per_class import precision_recall_curve
from ki2hoi_jax.analysis.per_class import precision_recall_curves
from ki2hoi_jax.analysis.per_class import PRCurve
from ki2hoi_jax.analysis.plots import plot_per_hoi_ap
from ki2hoi_jax.analysis.plots import plot_precision_recall
from ki2hoi_jax.analysis.plots import plot_seen_unseen
from ki2hoi_jax.analysis.runs import annotations_path
from ki2hoi_jax.analysis.runs import dataset_root
from ki2hoi_jax.analysis.runs import ensure_evaluated
from ki2hoi_jax.analysis.runs import eval_steps
from ki2hoi_jax.analysis.runs import load_config
from ki2hoi_jax.analysis.runs import load_run
from ki2hoi_jax.analysis.runs import read_predictions
from ki2hoi_jax.analysis.runs import resolve_workdir
from ki2hoi_jax.analysis.runs import Run
from ki2hoi_jax.analysis.tables import GroupStats
from ki2hoi_jax.analysis.tables import map_tables
from ki2hoi_jax.analysis.tables import seen_unseen_summary
from ki2hoi_jax.analysis.tables import summary_table
from ki2hoi_jax.analysis.tables import transfer_ranking
from ki2hoi_jax.analysis.tables import unseen_ap_by

__all__ = [
    # runs
    "resolve_workdir", "dataset_root", "annotations_path", "eval_steps",
    "read_predictions", "load_config", "Run", "load_run", "ensure_evaluated",
    # hoi_metrics
    "metrics_split", "per_hoi", "hoi_training_counts",
    "most_frequent_test_hois",
    # tables
    "map_tables", "GroupStats", "seen_unseen_summary", "summary_table",
    "transfer_ranking", "unseen_ap_by",
    # per_class
    "PerHoiFrequency", "per_hoi_ap_sorted_by_frequency", "PRCurve",
    "precision_recall_curves", "precision_recall_curve",
    # plots
    "plot_per_hoi_ap", "plot_precision_recall", "plot_seen_unseen",
    # gallery
    "PredictionGrid", "read_predict_outputs", "draw_record",
    "prediction_grid",
]
