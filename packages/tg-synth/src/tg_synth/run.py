"""``tg-synth run``: build the backends a config names, run the pipeline, write the output."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from tg_synth.backends.oracle import OracleChat, OracleDetector, ShapesOracle
from tg_synth.cache import StepCache
from tg_synth.config import ChatConfig, ConfigError, SynthConfig
from tg_synth.inputs import Inputs, load_inputs
from tg_synth.pipeline import Backends, Pipeline, log_event
from tg_synth.prompting import PromptSet


def _chat(cfg: ChatConfig, inputs: Inputs, seed: int):
    if cfg.kind == "oracle":
        if inputs.scenes is None:
            raise ConfigError("the oracle chat backend needs shapes-world input ([input] kind = 'shapes')")
        return OracleChat(ShapesOracle(inputs.scenes, cfg, seed))
    from tg_synth.backends.openai_chat import OpenAIChat

    return OpenAIChat(cfg, seed)


def build_backends(cfg: SynthConfig, inputs: Inputs) -> Backends:
    """The backends the config names (call inside the event loop that will use them)."""
    mllm = _chat(cfg.backends.mllm, inputs, cfg.seed)
    llm = mllm if cfg.backends.llm is None else _chat(cfg.backends.llm, inputs, cfg.seed)
    det = cfg.backends.detector
    if det.kind == "oracle":
        if inputs.scenes is None:
            raise ConfigError("the oracle detector needs shapes-world input ([input] kind = 'shapes')")
        detector = OracleDetector(ShapesOracle(inputs.scenes, cfg.backends.mllm, cfg.seed), det)
    else:
        from tg_synth.backends.grounding_dino import GroundingDinoDetector

        detector = GroundingDinoDetector(det)
    return Backends(mllm, llm, detector)


def out_dir_of(cfg: SynthConfig, out: str | Path | None = None) -> Path:
    return Path(out or cfg.output.dir)


def run(
    cfg: SynthConfig, out: str | Path | None = None, progress: bool | None = None, retry_quarantined: bool = False
) -> dict[str, Any]:
    """Run (or resume) a synthesis run; returns the manifest also written to ``OUT/manifest.json``."""
    out_dir = out_dir_of(cfg, out)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_path = Path(cfg.output.cache) if cfg.output.cache else out_dir / "cache.sqlite"
    show = cfg.progress if progress is None else progress
    with StepCache(cache_path) as cache:
        if retry_quarantined:
            forgotten = cache.delete_quarantined()
            log_event(out_dir, "retry_quarantined", rows=forgotten)
        inputs = load_inputs(cfg.input, out_dir)
        prompts = PromptSet.select(cfg.prompts)
        log_event(out_dir, "run_start", items=len(inputs.items), cache=str(cache_path))
        manifest = asyncio.run(_run(cfg, inputs, out_dir, cache, prompts, show))
        log_event(out_dir, "run_end", tasks=manifest["tasks"], failures=manifest["failures"]["total"],
                  live_seconds=manifest["live_seconds"])
        return manifest


async def _run(
    cfg: SynthConfig, inputs: Inputs, out_dir: Path, cache: StepCache, prompts: PromptSet, show: bool
) -> dict[str, Any]:
    backends = build_backends(cfg, inputs)
    try:
        pipeline = Pipeline(cfg, inputs, out_dir, cache, backends, prompts)
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        columns = (TextColumn("synth"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, disable=not show, transient=False, console=_stderr_console()) as bar:
            task = bar.add_task("images", total=len(inputs.items))
            t0 = time.perf_counter()
            live = await pipeline.produce(on_item=lambda _o: bar.advance(task))
            seconds = time.perf_counter() - t0
        log_event(out_dir, "live_pass_done", seconds=round(seconds, 3), computed=dict(live.computed),
                  cached=dict(live.hits))
        return await pipeline.assemble(live, seconds)
    finally:
        await backends.aclose()


def _stderr_console():
    from rich.console import Console

    return Console(file=sys.stderr)
