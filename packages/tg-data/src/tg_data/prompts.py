"""Prompt templates shared by the shapes world and the readers, so every source asks alike."""

from __future__ import annotations

# The REC prompt of the paper's evaluation; tg-eval scores answers to exactly this question.
REC_PROMPT = "Output the coordinate of {expression}."
REG_PROMPT = "Give a short description of the region {coord}."
CAPTION_PROMPT = "Describe the image briefly."
GROUNDED_CAPTION_PROMPT = "Describe the image in one sentence. Give the coordinate of every object you mention."
