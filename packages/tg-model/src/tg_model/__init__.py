"""tg-model: The TinyGroundingGPT multimodal LLM: projector, token layout, chat template, presets, Hugging Face save/load."""

__version__ = "0.1.0"
