"""Ray Tune + MLflow sweeps over DI* trials. Importing ``distar`` does not import this package;
its modules import Ray and MLflow only inside the functions that need them."""
