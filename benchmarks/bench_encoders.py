"""tg-encoders throughput against the libraries used directly, in the same run.

- ``encoder_forward``: our ``MultiScaleEncoder`` (CLIP block features + DINOv2 normed patches,
  concatenated) against calling open_clip's and timm's models directly with the same weights
  (normalise per tower, ``forward_intermediates`` / ``forward_features``, drop prefix tokens,
  concatenate). Outputs are checked equal before timing.
- ``preprocess``: our ``ImageProcessor`` (exact centred padding, one resize) against LLaVA's
  pipeline (``expand2square`` with the CLIP mean colour, then transformers' ``CLIPImageProcessor``).

Rates are images per second (higher is better). ``--size real`` builds the ViT-L/14-336 pair with
random weights (no download); use it on a GPU.

    uv run python benchmarks/bench_encoders.py [--quick] [--device cuda] [--size real] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
from PIL import Image

from tg_encoders import (
    ImageProcessor,
    MultiScaleEncoder,
    build_encoder,
    normalise,
    real_encoder_specs,
    tiny_encoder_specs,
)


def _timed(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median seconds per call after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _reference_encoder(encoder: MultiScaleEncoder) -> Callable[[torch.Tensor], torch.Tensor]:
    """The same towers as plain open_clip / timm modules, with our weights copied in."""
    import timm
    from open_clip.model import CLIPVisionCfg, _build_vision_tower

    clip, dino = encoder.towers
    spec = clip.spec()
    if "model" in spec:
        import open_clip

        vision = {**open_clip.get_model_config(spec["model"])["vision_cfg"], "image_size": spec["image_size"]}
    else:
        vision = {**spec["arch"], "image_size": spec["image_size"]}
    full_clip = _build_vision_tower(512, CLIPVisionCfg(**vision), quick_gelu=spec["quick_gelu"]).eval()
    missing, _ = full_clip.load_state_dict(clip.visual.state_dict(), strict=False)
    assert all(k.startswith(("ln_post", "proj", "transformer.resblocks")) for k in missing)
    block = clip.layer_index
    dino_model = timm.create_model(  # the same module class; copy our weights into a fresh one
        dino.model.default_cfg["architecture"], pretrained=False, num_classes=0, img_size=dino.image_size,
        **dino.spec().get("arch", {}),
    ).eval()
    dino_model.load_state_dict(dino.model.state_dict())
    prefix = dino_model.num_prefix_tokens

    def forward(pixels: torch.Tensor) -> torch.Tensor:
        a = full_clip.forward_intermediates(
            normalise(pixels, clip.mean, clip.std), indices=[block], intermediates_only=True, output_fmt="NLC"
        )["image_intermediates"][0]
        b = dino_model.forward_features(normalise(pixels, dino.mean, dino.std))[:, prefix:]
        return torch.cat([a, b.to(a.dtype)], dim=-1)

    return forward


def bench_encoder(args: argparse.Namespace, device: torch.device) -> dict:
    torch.manual_seed(0)
    specs = real_encoder_specs() if args.size == "real" else tiny_encoder_specs()
    with device:  # random weights made where they run
        encoder = build_encoder(specs, load_weights=False)
        reference = _reference_encoder(encoder)
    pixels = torch.rand(args.batch, 3, encoder.image_size, encoder.image_size, device=device)
    dtype = getattr(torch, args.dtype)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    with torch.inference_mode(), autocast:
        ours_out, ref_out = encoder(pixels), reference(pixels)
        torch.testing.assert_close(ours_out.float(), ref_out.float(), rtol=2e-2, atol=2e-2)
        repeats = 3 if args.quick else 10
        ours = _timed(lambda: encoder(pixels), repeats, device)
        ref = _timed(lambda: reference(pixels), repeats, device)
    name = f"encoder_forward[{args.size},batch={args.batch},{device.type},{args.dtype}]"
    result = {"name": name, "ours": args.batch / ours, "reference": args.batch / ref, "unit": "images/s"}
    result["ratio"] = result["ours"] / result["reference"]
    result["ours_ms_per_forward"] = ours * 1e3
    result["reference_ms_per_forward"] = ref * 1e3
    return result


def _expand2square(image: Image.Image, colour: tuple[int, int, int]) -> Image.Image:
    """LLaVA's padding (llava/mm_utils.py), reproduced as the reference."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    result = Image.new(image.mode, (side, side), colour)
    result.paste(image, ((side - width) // 2, (side - height) // 2))
    return result


def bench_preprocess(args: argparse.Namespace) -> dict:
    from transformers import CLIPImageProcessor

    size = 336
    images = [
        Image.new("RGB", (640 - 7 * i, 480 + 5 * i), (i * 3 % 255, 90, 160)) for i in range(8 if args.quick else 32)
    ]
    ours = ImageProcessor(size)
    hf = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    colour = tuple(int(255 * m) for m in hf.image_mean)

    def run_ours() -> object:
        return ours(images).pixel_values

    def run_reference() -> object:
        return hf([_expand2square(im, colour) for im in images], return_tensors="pt")["pixel_values"]

    assert run_ours().shape == run_reference().shape
    repeats = 3 if args.quick else 7
    t_ours = _timed(run_ours, repeats, torch.device("cpu"))
    t_ref = _timed(run_reference, repeats, torch.device("cpu"))
    n = len(images)
    return {
        "name": f"preprocess[640x480->{size}]",
        "ours": n / t_ours,
        "reference": n / t_ref,
        "unit": "images/s",
        "ratio": t_ref / t_ours,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and images")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", choices=["tiny", "real"], default="tiny")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument("--skip-preprocess", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(json.dumps(bench_encoder(args, device)))
    if not args.skip_preprocess:
        print(json.dumps(bench_preprocess(args)))


if __name__ == "__main__":
    main()
