"""The track layer: what a run records and how runs are compared -- the MLflow helpers
(``tracking``) and the UI plugin (``mlflow_app``), the paired statistics (``pairing``: what pairs;
``paired``: the tests, the variance split, Holm) and the paired stopper's rule (``stopping``)."""
