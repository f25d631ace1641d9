"""nerops: operate a resume entity-extraction (NER) model in production, safely."""

__version__ = "0.1.0"
