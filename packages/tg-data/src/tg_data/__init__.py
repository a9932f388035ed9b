"""tg-data: Shared types, box/coordinate format, dataset readers and writers, and the shapes world for TinyGroundingGPT."""

__version__ = "0.1.0"
