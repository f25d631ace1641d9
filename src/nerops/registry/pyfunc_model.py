"""The MLflow pyfunc wrapper of a nerops model (logged as code: MLflow runs this file to load it).

Input: a DataFrame with a string column ``text``. Output: a DataFrame with one column
``entities`` holding each text's entities as a JSON list of ``{label, start, end, text}``.
``mlflow models serve`` answers ``/invocations`` with it.
"""

from __future__ import annotations

import json

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel, PythonModelContext


class NerPyfuncModel(PythonModel):
    """Loads the spaCy-based model folder from the logged artifacts and predicts with it."""

    def load_context(self, context: PythonModelContext) -> None:
        from nerops.model.pipeline import Extractor

        self._extractor = Extractor.load(context.artifacts["model_dir"])

    def predict(self, context: PythonModelContext, model_input: pd.DataFrame, params: dict | None = None):
        texts = model_input["text"] if isinstance(model_input, pd.DataFrame) else model_input
        return pd.DataFrame({"entities": [json.dumps(self._extractor.predict(str(text))) for text in texts]})

    def __getstate__(self) -> dict:
        return {}  # never pickle the loaded pipeline into the model


mlflow.models.set_model(NerPyfuncModel())
