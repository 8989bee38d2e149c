"""Ignite handlers (``attach(engine)``) shared by the bundles' workflows."""

from common.handlers.pd_evaluation import PDAnomalyEvaluationHandler

__all__ = ["PDAnomalyEvaluationHandler"]
