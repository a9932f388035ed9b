"""TinyGroundingGPT: a frozen multi-scale encoder, an MLP projector, and any causal LM.

Image and object-image features replace the rows of their placeholder tokens in the LLM's input
embeddings (one vectorised ``masked_scatter`` per modality, as HF Llava does), so the LLM itself is
untouched: any ``AutoModelForCausalLM`` works, its KV cache and generation included.
"""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_outputs import CausalLMOutputWithPast

from tg_encoders.encoder import MultiScaleEncoder, build_encoder
from tg_encoders.feature_cache import FeatureCache
from tg_model.configuration import MODEL_TYPE, TinyGroundingGPTConfig
from tg_model.template import IGNORE_INDEX


class MediaMismatch(ValueError):
    """Placeholder tokens and features disagree; the message names the sample."""


def merge_patches(features: torch.Tensor, grid: int, merge: int) -> torch.Tensor:
    """(n, grid * grid, c) row-major patches -> (n, (grid / merge) ** 2, merge * merge * c), each
    token the concatenation of one merge x merge block (row-major inside the block)."""
    if merge == 1:
        return features
    n, _, c = features.shape
    side = grid // merge
    blocks = features.reshape(n, side, merge, side, merge, c).permute(0, 1, 3, 2, 4, 5)
    return blocks.reshape(n, side * side, merge * merge * c)


class Projector(nn.Module):
    """Linear -> GELU -> Linear, from the concatenated encoder width to the LLM width."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int, act: str = "gelu") -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_features, hidden_features)
        self.act = ACT2FN[act]
        self.linear_2 = nn.Linear(hidden_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


class TinyGroundingGPTPreTrainedModel(PreTrainedModel):
    config_class = TinyGroundingGPTConfig
    config: TinyGroundingGPTConfig
    base_model_prefix = ""
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _no_split_modules: ClassVar[list[str]] = []

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # Towers and LLM are built (and initialised) by their own libraries; only the projector is ours.
        if isinstance(module, Projector):
            std = getattr(self.config.text_config, "initializer_range", 0.02)
            for lin in (module.linear_1, module.linear_2):
                nn.init.normal_(lin.weight, mean=0.0, std=std)
                nn.init.zeros_(lin.bias)


class TinyGroundingGPTForCausalLM(TinyGroundingGPTPreTrainedModel, GenerationMixin):
    def __init__(
        self,
        config: TinyGroundingGPTConfig,
        encoder: MultiScaleEncoder | None = None,
        language_model: PreTrainedModel | None = None,
    ) -> None:
        super().__init__(config)
        self.encoder = encoder if encoder is not None else build_encoder(
            config.encoder_specs, load_weights=False, resample=config.encoder_resample
        )
        self.language_model = (
            language_model if language_model is not None else AutoModelForCausalLM.from_config(config.text_config)
        )
        merge = config.spatial_merge_size
        if self.encoder.grid % merge:
            raise ValueError(
                f"spatial_merge_size {merge} does not divide the towers' {self.encoder.grid}x{self.encoder.grid} "
                f"patch grid; choose a divisor of {self.encoder.grid}"
            )
        width = config.text_config.hidden_size
        self.projector = Projector(
            self.encoder.hidden_size * merge**2, config.projector_hidden_size or width, width, config.projector_act
        )
        self.post_init()
        media_ids = [t for t in (config.image_token_id, config.object_token_id) if t is not None]
        if media_ids and self.generation_config is not None:
            # a generated placeholder would have no features behind it (and breaks re-encoding without a cache)
            self.generation_config.suppress_tokens = media_ids

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> TinyGroundingGPTForCausalLM:
        """As ``PreTrainedModel.from_pretrained``; the encoder comes back frozen, as it was built.

        Loading materialises every parameter afresh, gradients on; frozen towers would otherwise
        come back trainable (and cost optimiser memory in whoever trains the loaded model next).
        """
        model = super().from_pretrained(*args, **kwargs)
        if isinstance(model, TinyGroundingGPTForCausalLM) and model.encoder.frozen:
            model.encoder.freeze()
        return model

    # plumbing the LLM's embeddings through --------------------------------------------------------
    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_output_embeddings(value)

    @property
    def token_grid(self) -> int:
        """Side of the image-token grid: the towers' patch grid after the spatial merge."""
        return self.encoder.grid // self.config.spatial_merge_size

    @property
    def image_tokens(self) -> int:
        return self.token_grid**2

    @property
    def object_tokens(self) -> int:
        return self.config.object_grid**2

    # features -----------------------------------------------------------------------------------
    feature_cache: FeatureCache | None = None

    def use_feature_cache(self, max_mb: float) -> FeatureCache | None:
        """Remember frozen towers' features by image content, up to ``max_mb`` MiB (0: no cache).

        The cache is never consulted while any tower parameter trains, and is emptied then, so
        towers trained and frozen again are not answered from their old features. Load new tower
        weights with the cache off (or ``clear()`` it).
        """
        self.feature_cache = FeatureCache(int(max_mb * 2**20)) if max_mb > 0 else None
        return self.feature_cache

    def _tower_features(self, pixels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.encoder(pixels)

    def _encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        frozen = not any(p.requires_grad for p in self.encoder.parameters())
        pixels = pixel_values.to(self.projector.linear_1.weight.dtype)
        cache = self.feature_cache
        if cache is not None and frozen:
            feats = cache.features(pixels, self._tower_features)
        else:
            if cache is not None:
                cache.clear()
            with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
                feats = self.encoder(pixels)
        return self.projector(merge_patches(feats, self.encoder.grid, self.config.spatial_merge_size)
                              .to(self.projector.linear_1.weight.dtype))

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(n_images, 3, S, S) in [0, 1] -> (n_images, image_tokens, llm_width): one row per merged patch block."""
        return self._encode(pixel_values)

    def object_features(self, object_pixel_values: torch.Tensor) -> torch.Tensor:
        """(n_objects, 3, S, S) -> (n_objects, object_grid ** 2, llm_width): pooled so many fit in context."""
        feats = self._encode(object_pixel_values)
        n, _tokens, width = feats.shape
        grid, g = self.token_grid, self.config.object_grid
        if g == grid:
            return feats
        maps = feats.transpose(1, 2).reshape(n, width, grid, grid)
        return F.adaptive_avg_pool2d(maps, g).flatten(2).transpose(1, 2)

    def _check_counts(
        self, mask: torch.Tensor, per_item: int, n_items: int, what: str, sample_ids: list[str] | None,
        counts: torch.Tensor | None,
    ) -> None:
        per_row = mask.sum(dim=1)
        expected = counts * per_item if counts is not None else None
        if expected is not None and not torch.equal(per_row, expected.to(per_row.device)):
            row = int((per_row != expected.to(per_row.device)).nonzero()[0, 0])
            name = sample_ids[row] if sample_ids else f"row {row}"
            raise MediaMismatch(
                f"sample {name!r}: {int(per_row[row])} {what} token(s) but {int(counts[row])} {what}(s) of "
                f"{per_item} tokens each; the sample's placeholders and its {what}s disagree"
            )
        if int(per_row.sum()) != n_items * per_item:
            bad = [
                sample_ids[r] if sample_ids else f"row {r}"
                for r in range(per_row.numel())
                if int(per_row[r]) % per_item
            ]
            raise MediaMismatch(
                f"batch has {int(per_row.sum())} {what} token(s) but {n_items} {what}(s) of {per_item} tokens "
                f"were given" + (f"; samples with broken {what} spans: {bad}" if bad else "")
            )

    def embed_inputs(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        object_pixel_values: torch.Tensor | None = None,
        media_counts: torch.Tensor | None = None,
        sample_ids: list[str] | None = None,
    ) -> torch.Tensor:
        """Token embeddings with image and object placeholder rows replaced by their features."""
        embeds = self.get_input_embeddings()(input_ids)
        for token_id, pixels, featurise, per_item, what, col in (
            (self.config.image_token_id, pixel_values, self.image_features, self.image_tokens, "image", 0),
            (self.config.object_token_id, object_pixel_values, self.object_features, self.object_tokens, "object", 1),
        ):
            mask = input_ids == token_id
            n_items = 0 if pixels is None else pixels.shape[0]
            counts = media_counts[:, col] if media_counts is not None else None
            self._check_counts(mask, per_item, n_items, what, sample_ids, counts)
            if n_items:
                feats = featurise(pixels).to(embeds.dtype)
                embeds = embeds.masked_scatter(mask.unsqueeze(-1), feats.reshape(-1, feats.shape[-1]))
        if pixel_values is None and object_pixel_values is None and self.training and torch.is_grad_enabled():
            # A text-only batch still touches the projector (with zero weight), so that every rank of a
            # data-parallel step produces gradients for the same parameters.
            probe = self.projector(embeds.new_zeros(1, self.encoder.hidden_size))
            embeds = embeds + 0.0 * probe.sum()
        return embeds

    # forward and generation ---------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        object_pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Any | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        media_counts: torch.Tensor | None = None,
        sample_ids: list[str] | None = None,
        supervised_logits_only: bool = False,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """As the LLM's forward, with media. ``supervised_logits_only`` (with ``labels``): the LM head
        runs only where a label is predicted and ``logits`` holds just those rows, (n_labels, vocab);
        the loss is the same as over the whole sequence, for a fraction of the head's work."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            decoding = cache is not None and cache.get_seq_length() > 0
            if decoding:
                # later generation steps: the media were merged into the cache at prefill
                inputs_embeds = self.get_input_embeddings()(input_ids)
            else:
                inputs_embeds = self.embed_inputs(input_ids, pixel_values, object_pixel_values, media_counts, sample_ids)
        if supervised_logits_only and labels is not None and self._plain_lm_head():
            outputs = self.language_model.get_decoder()(
                inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
                cache=cache, use_cache=use_cache, **kwargs,
            )
            loss, logits = supervised_loss(outputs.last_hidden_state, labels, self.get_output_embeddings())
            return CausalLMOutputWithPast(loss=loss, logits=logits, cache=outputs.cache)
        return self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            labels=labels,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )

    def _plain_lm_head(self) -> bool:
        """Whether the LLM's logits are just its output embeddings applied to the last hidden state
        (Llama, Qwen2, ...): not so where the logits are scaled or soft-capped afterwards (Gemma 2,
        Cohere), which keep the LLM's own forward."""
        text = self.config.text_config
        return not any(getattr(text, name, None) for name in ("final_logit_softcapping", "logit_scale"))


def supervised_loss(
    hidden: torch.Tensor, labels: torch.Tensor, head: nn.Module
) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token cross entropy from the hidden states of the positions that predict a label.

    The same mean over labelled tokens as transformers' causal-LM loss, but the head and the
    softmax see only those rows: answers are a third of a grounding sample's tokens, and with a
    real vocabulary (150,000 for Qwen2.5) the full logits are most of a step's activation memory.
    """
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    logits = head(hidden[:, :-1][keep])
    return F.cross_entropy(logits.float(), targets[keep]), logits


def register_auto_classes() -> None:
    """Let ``AutoConfig`` / ``AutoModelForCausalLM`` load TinyGroundingGPT directories."""
    with contextlib.suppress(ValueError):  # already registered
        AutoConfig.register(MODEL_TYPE, TinyGroundingGPTConfig)
    with contextlib.suppress(ValueError):
        AutoModelForCausalLM.register(TinyGroundingGPTConfig, TinyGroundingGPTForCausalLM)


register_auto_classes()  # importing the model makes saved directories loadable through the Auto classes
