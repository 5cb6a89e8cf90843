"""Guardrails: personal data and secrets masked before a request leaves and restored in the
answer (streamed too), content rules, an external judge. Plain Python: no Ray, no HTTP
framework; of ours, it imports nothing."""

from guardrails._body import map_all, map_request, texts
from guardrails._config import (
    GuardrailsConfig,
    JudgeConfig,
    OnError,
    PiiMode,
    PiiPolicy,
    Policy,
    Rule,
)
from guardrails._detect import Detector, Finding, PresidioDetector, resolve
from guardrails._entities import DEFAULT_ENTITIES, ENTITIES, PII, SECRETS
from guardrails._guard import Action, Guard, Inspection, Plan, refused_action
from guardrails._rules import Refusal, Verdict
from guardrails._stream import StreamRestorer
from guardrails._vault import PLACEHOLDER, Vault

__all__ = [
    "DEFAULT_ENTITIES",
    "ENTITIES",
    "PII",
    "PLACEHOLDER",
    "SECRETS",
    "Action",
    "Detector",
    "Finding",
    "Guard",
    "GuardrailsConfig",
    "Inspection",
    "JudgeConfig",
    "OnError",
    "PiiMode",
    "PiiPolicy",
    "Plan",
    "Policy",
    "PresidioDetector",
    "Refusal",
    "Rule",
    "StreamRestorer",
    "Vault",
    "Verdict",
    "map_all",
    "map_request",
    "refused_action",
    "resolve",
    "texts",
]
