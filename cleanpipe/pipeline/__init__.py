"""Declarative batch pipelines: ``cleanpipe run pipelines/NAME.toml``.

A pipeline file (:mod:`.config`) names a source, the stages oof -> flag -> clean -> retrain (any
contiguous run of them) and a sink. :func:`run_pipeline` (:mod:`.runner`) checks it all, writes
``runs/<pipeline>/<run-id>/`` with one folder per stage and a ``manifest.json`` (:mod:`.manifest`),
and resumes at the first stage whose input or settings changed.
"""

from .config import STAGES, Pipeline, load_pipeline
from .runner import RunResult, run_pipeline, select_stages

__all__ = ["STAGES", "Pipeline", "RunResult", "load_pipeline", "run_pipeline", "select_stages"]
