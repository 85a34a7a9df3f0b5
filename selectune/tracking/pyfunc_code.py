"""The registered pyfunc as code (MLflow's models-from-code): MLflow stores this file with the model and runs it
when the model loads, so the registry holds no pickle (no ``python_model.pkl`` whose loading would execute
whatever was pickled). The model itself is :class:`selectune.tracking.adapter_model.AdapterModel`."""

import mlflow.models

from selectune.tracking.adapter_model import AdapterModel

mlflow.models.set_model(AdapterModel())
