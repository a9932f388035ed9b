"""The model's configuration: which towers, which LLM, and how images and objects become tokens."""

from __future__ import annotations

from typing import Any, ClassVar

from transformers import AutoConfig, PretrainedConfig
from transformers.configuration_utils import SubConfigSpec

MODEL_TYPE = "tinygroundinggpt"
# where a turn's whole-image placeholder goes: where the data wrote it, or moved before / after the turn's text
IMAGE_PLACEMENTS = ("as_written", "before_text", "after_text")


def check_image_placement(placement: str) -> str:
    if placement not in IMAGE_PLACEMENTS:
        raise ValueError(f"image_placement must be one of {', '.join(IMAGE_PLACEMENTS)}; got {placement!r}")
    return placement


class TinyGroundingGPTConfig(PretrainedConfig):
    """Everything needed to rebuild the model offline; weights live in the checkpoint.

    ``encoder_specs`` are tg-encoders tower specs (rebuilt without downloading when loading a
    checkpoint); ``text_config`` is the causal LM's own config (Qwen2 for every shipped preset).
    """

    model_type: ClassVar[str] = MODEL_TYPE
    sub_configs_defaults: ClassVar[dict[str, SubConfigSpec]] = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="qwen2"),
    }

    text_config: dict | PretrainedConfig | None = None
    encoder_specs: list[dict[str, Any]] | None = None
    encoder_resample: bool = False
    projector_hidden_size: int | None = None  # None: the LLM width
    projector_act: str = "gelu"
    # each spatial_merge_size x spatial_merge_size block of patches becomes one image token, its
    # features concatenated before the projector (Qwen2-VL's patch merger): a quarter of the
    # tokens at 2, every patch's features kept
    spatial_merge_size: int = 1
    object_grid: int = 12  # object images are pooled to object_grid x object_grid rows
    object_margin: float = 0.1  # context around an object crop, fraction of the box size
    image_token_id: int | None = None
    object_token_id: int | None = None
    system_prompt: str | None = None
    # "after_text": the question comes first, so the image rows can attend to it (causal attention
    # lets a row see only what precedes it); "before_text" is LLaVA's normalisation
    image_placement: str = "as_written"
    context_length: int = 2048  # the longest token sequence the model is trained on
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        if self.encoder_specs is None:
            self.encoder_specs = []
        if self.spatial_merge_size < 1:
            raise ValueError(f"spatial_merge_size must be >= 1, got {self.spatial_merge_size}")
        if self.object_grid < 1:
            raise ValueError(f"object_grid must be >= 1, got {self.object_grid}")
        if not 0 <= self.object_margin <= 10:
            raise ValueError(f"object_margin must be in [0, 10], got {self.object_margin}")
        check_image_placement(self.image_placement)
        if self.text_config is not None and getattr(self.text_config, "tie_word_embeddings", False):
            self.tie_word_embeddings = True

    @property
    def hidden_size(self) -> int:
        return self.text_config.hidden_size

    @property
    def vocab_size(self) -> int:
        return self.text_config.vocab_size
