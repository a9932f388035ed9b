"""tg-eval: Benchmarks and metrics for grounding MLLMs: REC, POPE, VQA-style benchmarks, judges and retrieval."""

__version__ = "0.1.0"
