"""tg-train: Three-stage TinyGroundingGPT trainer on DeepSpeed ZeRO-2, recipes and the shapes-world quickstart."""

__version__ = "0.1.0"
