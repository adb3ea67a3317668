"""Models: GGUF discovery, ids, tiers, memory estimates, the registry and the demo model.

discovery.py  scan folders, group split files, build and refresh the registry
gguf_meta.py  read a GGUF header (key/values, tensor infos) without the weights
ids.py        the seed's id scheme family_size_quant_tier, and uniqueness
tiers.py      tier by parameter count; a profile's {tier: [model ids]}; tier matching
memory.py     weights + KV cache + overhead estimate
registry.py   ModelEntry / ModelRegistry and their JSON file
demo.py       the bundled Gemma 3 270M, assembled on first use
"""

from magi.models.demo import DEMO_MODEL_ID, demo_available, ensure_demo_model
from magi.models.discovery import DiscoveryResult, DiscoveryStats, ModelDiscoveryService, discover_models
from magi.models.memory import MemoryEstimate, estimate_memory
from magi.models.registry import ModelEntry, ModelFile, ModelRegistry, SkippedFile
from magi.models.tiers import assign_tier, check_tier_matching, model_tiers, profile_tier_models

__all__ = [
    "DEMO_MODEL_ID",
    "DiscoveryResult",
    "DiscoveryStats",
    "MemoryEstimate",
    "ModelDiscoveryService",
    "ModelEntry",
    "ModelFile",
    "ModelRegistry",
    "SkippedFile",
    "assign_tier",
    "check_tier_matching",
    "demo_available",
    "discover_models",
    "ensure_demo_model",
    "estimate_memory",
    "model_tiers",
    "profile_tier_models",
]
