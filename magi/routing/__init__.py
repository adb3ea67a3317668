"""Routing: which tier and which model answer a prompt (pure logic, no model calls).

* :mod:`~magi.routing.scorer`: complexity scorers (0-10, explainable) and their registry
* :mod:`~magi.routing.balancer`: load balancing over a tier's healthy models
* :mod:`~magi.routing.health`: circuit breakers, in-flight counts, periodic probing
* :mod:`~magi.routing.router`: the decision (tier, stages, model order, fallback tiers)
* :mod:`~magi.routing.metrics`: ROC AUC and threshold accuracy for judging scorers
"""

from magi.routing.balancer import (
    Balancer,
    available_strategies,
    make_balancer,
    register_balancer,
)
from magi.routing.health import (
    CircuitBreaker,
    CircuitState,
    HealthMonitor,
    ModelUnavailableError,
    NoHealthyModelError,
)
from magi.routing.router import ANSWER, DRAFT, REFINE, RouteDecision, Router, Stage
from magi.routing.scorer import (
    ComplexityScore,
    HeuristicScorer,
    Scorer,
    available_scorers,
    get_scorer,
    register_scorer,
)

__all__ = [
    "ANSWER",
    "DRAFT",
    "REFINE",
    "Balancer",
    "CircuitBreaker",
    "CircuitState",
    "ComplexityScore",
    "HealthMonitor",
    "HeuristicScorer",
    "ModelUnavailableError",
    "NoHealthyModelError",
    "RouteDecision",
    "Router",
    "Scorer",
    "Stage",
    "available_scorers",
    "available_strategies",
    "get_scorer",
    "make_balancer",
    "register_balancer",
    "register_scorer",
]
