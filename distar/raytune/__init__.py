"""The sweep layer: Ray Tune + MLflow sweeps over DI* trials, for the ``sweeps/`` entry points.
Importing ``distar`` does not import this package; Ray loads only where a trial or sweep runs.

``settings`` (names, storage, shared flags), ``definition`` (what ``--resume`` must match),
``spec`` (a trial as data; the paper's values translated once), ``grid`` (Table 2 -> trials),
``searcher`` (Optuna + ASHA), ``tuner`` (run a sweep), ``trial`` (layer 2: the Tune trial driver),
``worker`` (layer 3: a TorchTrainer worker running :class:`distar.loop.trainer.Trainer`),
``mlflow_view`` (what a sweep shows in MLflow), ``mlflow_logger`` and ``forward`` (the driver
hands the worker's records to the trial's MLflow run), ``placement`` (the reaper of
placement groups a lost node left), ``fence`` (which attempt of a trial may write), ``console``,
``faults``."""
