"""Evaluation: FID, KID, CLIPScore, CLIP cosine and memorization, for every family, with a report.

Python use::

    from dishgen.evaluate import EvaluationConfig, evaluate
    report = evaluate(EvaluationConfig(data="dataset", out="report", models=["runs/gan", "runs/vae"]))

The command line is ``dishgen evaluate`` (see docs/evaluate.md). The metric maths lives in
:mod:`dishgen.evaluate.metrics` as pure functions over tensors; the networks in
:mod:`dishgen.evaluate.features`.
"""

from dishgen.evaluate.harness import METRICS, EvaluationConfig, EvaluationError, evaluate

__all__ = ["METRICS", "EvaluationConfig", "EvaluationError", "evaluate"]
