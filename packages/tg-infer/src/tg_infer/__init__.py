"""tg-infer: Inference for TinyGroundingGPT: batched generation, CLI, OpenAI-compatible server, demo, boxes and attention maps."""

__version__ = "0.1.0"
