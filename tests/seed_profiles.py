"""The seed document's three default profiles, copied verbatim (Phase 2 report)."""

SEED_YAML: dict[str, str] = {
    "development": """\
profile:
  name: "Development"
  description: "Fast iteration with small models and two-stage processing"

enabled_models:
  - qwen3_4p0b_q4km_fast
  - deepseek_r10528qwen3_8p0b_q4km_powerful

tier_config:
  - name: "fast"
    max_score: 5.0
    expected_time_seconds: 2
  - name: "powerful"
    max_score: .inf
    expected_time_seconds: 10

two_stage:
  enabled: true
  stage1_tier: "fast"
  stage2_tier: "powerful"
  stage1_max_tokens: 500

load_balancing:
  enabled: false
""",
    "production": """\
profile:
  name: "Production"
  description: "High-quality responses with best models and load balancing"

enabled_models:
  - deepseek_r10528qwen3_8p0b_q4km_powerful
  - qwen2_coder_p5_14p0b_q4km_powerful

tier_config:
  - name: "powerful"
    max_score: .inf
    expected_time_seconds: 15

two_stage:
  enabled: false

load_balancing:
  enabled: true
  strategy: "round_robin"
  health_check_interval: 30
""",
    "fast-only": """\
profile:
  name: "Fast Only"
  description: "Maximum speed with single small model"

enabled_models:
  - qwen3_4p0b_q4km_fast

tier_config:
  - name: "fast"
    max_score: .inf
    expected_time_seconds: 2

two_stage:
  enabled: false

load_balancing:
  enabled: false
""",
}
