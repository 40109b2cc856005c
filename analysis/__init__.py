"""Reports of distar sweeps, read back from MLflow."""
