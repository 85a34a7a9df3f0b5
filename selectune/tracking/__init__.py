"""MLflow: runs (the store, parameters, datasets, figures), the Model Registry (register, resolve, reload, the
retraining decision), and the comparison of pipeline runs."""
