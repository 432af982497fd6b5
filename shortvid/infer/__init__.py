"""Inference: a trained run classifying videos, for every user of it (the command line, evaluation,
hard-set mining, fusion, batch jobs, the HTTP service in ``shortvid.serve``).

- ``classifier``: ``Classifier.load(run).predict(video)``: decode (the run's ``FrameSpec``, within
  ``DecodeLimits``) → preprocess → backend → decision policy → ``Prediction``.
- ``backends``: the backends and precisions, ``check_backend`` and ``resolve_backend`` (the one place
  that picks the backend and makes or finds its model file).
- ``batch``: ``classify_split`` (a labelled split, one video at a time), ``classify_many`` (pipelined
  batches, an ``Outcome`` per source) and ``score_clips`` (one model call, one by one if it fails).
- ``store``: the prediction rows of a batch job, in Parquet or JSONL parts.
"""

from .backends import BACKENDS, PRECISIONS, BackendError, OnnxBackend, TorchBackend, check_backend, resolve_backend
from .batch import Classified, Outcome, PipelineStats, classify_many, classify_split, score_clips
from .classifier import Classifier, Label, Prediction
from .store import PredictionStore

__all__ = ["BACKENDS", "PRECISIONS", "BackendError", "Classified", "Classifier", "Label", "OnnxBackend", "Outcome",
           "PipelineStats", "Prediction", "PredictionStore", "TorchBackend", "check_backend", "classify_many",
           "classify_split", "resolve_backend", "score_clips"]
