"""TinyGroundingGPT against transformers' LlavaForConditionalGeneration at equal dims, in the same run.

The reference is HF Llava built from our ``tiny`` preset's dims (read at run time, so it follows
the preset): a CLIP vision config as wide as our concatenated encoder (same patch size, image size,
depth and head width, so the same number of image tokens), LLaVA's defaults for the rest
(penultimate layer, CLS dropped, GELU MLP projector), and a Qwen2 text config equal to ours holding
our language model's weights (text-only logits are checked equal before timing). Both encoders are
frozen, as in every LLaVA-style training stage. Both models get the same token ids, pixels, labels
and batch.

- ``train_step``: forward + backward of the language-modelling loss (steps/s).
- ``generate``: greedy decoding with the KV cache, a fixed number of new tokens (tokens/s).

Each side runs in turn, interleaved, several times; medians are reported (the machine is shared).

    uv run python benchmarks/bench_model.py [--quick] [--device cuda] [--batch 8] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration, Qwen2Config

from tg_model.modeling import TinyGroundingGPTForCausalLM
from tg_model.presets import build_model


def llava_like(model: TinyGroundingGPTForCausalLM) -> LlavaForConditionalGeneration:
    """HF Llava with our dims: same image tokens and encoder width, our text config and LLM weights."""
    specs = model.config.encoder_specs
    clip_arch = next(s["arch"] for s in specs if s["type"] == "clip")
    depth = max(s["arch"].get("layers", s["arch"].get("depth", 0)) for s in specs)
    width = model.encoder.hidden_size
    head_width = clip_arch["head_width"]
    vision = CLIPVisionConfig(
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=depth,
        num_attention_heads=width // head_width,
        image_size=model.encoder.image_size,
        patch_size=clip_arch["patch_size"],
    )
    text = Qwen2Config(**model.config.text_config.to_dict())
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=model.config.image_token_id,
        image_seq_length=model.image_tokens,
        tie_word_embeddings=text.tie_word_embeddings,
    )
    reference = LlavaForConditionalGeneration(config)
    llm = model.language_model
    reference.model.language_model.load_state_dict(llm.model.state_dict())
    reference.lm_head.load_state_dict(llm.lm_head.state_dict())
    reference.model.vision_tower.requires_grad_(False)
    reference.generation_config.pad_token_id = model.generation_config.pad_token_id
    return reference


def make_inputs(model: TinyGroundingGPTForCausalLM, batch: int, text_tokens: int, seed: int = 0) -> dict:
    """Each row: text, one image's placeholder span, more text; labels on the text after the image."""
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    vocab = cfg.text_config.vocab_size
    low = max(cfg.image_token_id, cfg.object_token_id, cfg.text_config.pad_token_id) + 1
    before = torch.randint(low, vocab, (batch, 8), generator=g)
    after = torch.randint(low, vocab, (batch, text_tokens), generator=g)
    image = torch.full((batch, model.image_tokens), cfg.image_token_id)
    input_ids = torch.cat([before, image, after], dim=1)
    labels = input_ids.clone()
    labels[:, : before.shape[1] + image.shape[1]] = -100
    size = model.encoder.image_size
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "labels": labels,
        "pixel_values": torch.rand(batch, 3, size, size, generator=g),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, device: torch.device) -> dict[str, float]:
    """Median seconds per call of each function, after one warm-up each; the functions take turns in
    an order that flips every round (a b, b a, a b, ...), so neither always runs first."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(repeats):
        order = list(fns.items()) if round_ % 2 == 0 else list(reversed(fns.items()))
        for name, fn in order:
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def check_same_language_model(ours: torch.nn.Module, reference: torch.nn.Module, inputs: dict) -> None:
    text = {"input_ids": inputs["input_ids"][:, :8], "attention_mask": inputs["attention_mask"][:, :8]}
    with torch.no_grad():
        a, b = ours(**text).logits, reference(**text).logits
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def bench_train_step(ours, reference, inputs, args, device) -> dict:
    ours.train()
    reference.train()

    def step(model: torch.nn.Module) -> Callable[[], None]:
        def run() -> None:
            model.zero_grad(set_to_none=True)
            model(**inputs).loss.backward()

        return run

    t = interleaved({"ours": step(ours), "reference": step(reference)}, args.repeats, device)
    return _result(f"train_step[tiny,batch={args.batch},seq={inputs['input_ids'].shape[1]},{device.type}]",
                   1 / t["ours"], 1 / t["reference"], "steps/s", t)


def bench_generate(ours, reference, inputs, args, device) -> dict:
    ours.eval()
    reference.eval()
    prompt = {k: inputs[k] for k in ("input_ids", "attention_mask", "pixel_values")}
    settings = {"max_new_tokens": args.new_tokens, "min_new_tokens": args.new_tokens, "do_sample": False}

    def gen(model: torch.nn.Module) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            with torch.no_grad():
                return model.generate(**prompt, **settings)

        return run

    produced = {name: gen(m)().shape for name, m in (("ours", ours), ("reference", reference))}
    assert produced["ours"] == produced["reference"], produced
    t = interleaved({"ours": gen(ours), "reference": gen(reference)}, args.repeats, device)
    tokens = args.batch * args.new_tokens
    return _result(f"generate[tiny,batch={args.batch},new_tokens={args.new_tokens},greedy,{device.type}]",
                   tokens / t["ours"], tokens / t["reference"], "tokens/s", t)


def _result(name: str, ours: float, reference: float, unit: str, seconds: dict[str, float]) -> dict:
    return {
        "name": name,
        "ours": ours,
        "reference": reference,
        "unit": unit,
        "ratio": ours / reference,
        "ours_ms": seconds["ours"] * 1e3,
        "reference_ms": seconds["reference"] * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller batch, fewer tokens and repeats")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=None, help="default 8 (4 with --quick)")
    parser.add_argument("--text-tokens", type=int, default=None, help="text tokens after the image (default 64)")
    parser.add_argument("--new-tokens", type=int, default=None, help="tokens to generate (default 32)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per side (default 11, 5 quick)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument("--only", choices=["train_step", "generate"], default=None)
    args = parser.parse_args()
    args.batch = args.batch or (4 if args.quick else 8)
    args.text_tokens = args.text_tokens or (32 if args.quick else 64)
    args.new_tokens = args.new_tokens or (16 if args.quick else 32)
    args.repeats = args.repeats or (5 if args.quick else 11)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    ours, _ = build_model("tiny", seed=0)
    reference = llava_like(ours)
    ours.to(device)
    reference.to(device)
    inputs = {k: v.to(device) for k, v in make_inputs(ours, args.batch, args.text_tokens).items()}
    check_same_language_model(ours.eval(), reference.eval(), inputs)
    if args.only in (None, "train_step"):
        print(json.dumps(bench_train_step(ours, reference, inputs, args, device)), flush=True)
    if args.only in (None, "generate"):
        print(json.dumps(bench_generate(ours, reference, inputs, args, device)), flush=True)


if __name__ == "__main__":
    main()
