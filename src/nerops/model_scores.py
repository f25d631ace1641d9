"""Score a model folder on a corpus: the evaluation core, without any presentation.

The CLI (:mod:`nerops.reporting`) draws a progress bar around it; inside flows the lifecycle
steps (:mod:`nerops.lifecycle`) report progress to the Prefect run logger.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from nerops.data import read_corpus
from nerops.evaluation import score
from nerops.model.pipeline import Extractor

EVALUATION_FILE = "evaluation.json"

ScoreProgress = Callable[[int, int], None]  # (documents done, total)


def evaluate_model(
    model_dir: Path, data_path: Path, *, bootstrap_samples: int = 1000, progress: ScoreProgress | None = None
) -> dict[str, object]:
    """Score the model in ``model_dir`` on the CVs of a zip or folder (entity-level, per label and micro)."""
    docs = read_corpus(Path(data_path))
    extractor = Extractor.load(model_dir)
    predictions = []
    for done, doc in enumerate(docs, start=1):
        predictions.append(extractor.predict_spans([doc.text])[0])
        if progress is not None:
            progress(done, len(docs))
    result = score(
        [[(s.start, s.end, s.label) for s in doc.spans] for doc in docs],
        predictions,
        bootstrap_samples=bootstrap_samples,
    )
    return {"model": str(model_dir), "data": str(data_path), **result}
