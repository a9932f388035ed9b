"""tg-synth: Multi-scale fine-grained grounding data synthesis: recognition, grounding, relations, QA generation, filters."""

__version__ = "0.1.0"
