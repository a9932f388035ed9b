"""The pipeline: every image through recognize -> ground -> relate -> generate, then the output.

Two passes over the images. The live pass runs each image's chain as its own task (a bounded
window of images at a time), so chat calls of many images overlap up to the backend's concurrency
and detection requests from many images share batches; every finished step is committed to the
cache. The assembly pass replays each image's chain from the cache alone, in input order, applies
the filters and writes the samples: the output depends only on what the cache holds, so a run that
was killed and restarted writes exactly what an uninterrupted run writes.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tg_synth.backends.base import ChatBackend, Detector, FatalBackendError
from tg_synth.cache import DONE, QUARANTINED, Row, StepCache
from tg_synth.config import SynthConfig
from tg_synth.executor import Executor, MissingResult
from tg_synth.filters import FilterReport, s1_dictionary, usable_object_images
from tg_synth.images import ImageRef
from tg_synth.inputs import Inputs
from tg_synth.output import FORMAT, CropWriter, ShardWriter, write_json_atomic
from tg_synth.prompting import PromptSet
from tg_synth.qa import ImageFacts, QABuilder, stage_of
from tg_synth.records import ImageItem, Triple
from tg_synth.steps import STEPS
from tg_synth.steps.generate import converse, describe, refer
from tg_synth.steps.ground import DetectorBatcher, detect, grounded_instances
from tg_synth.steps.recognize import recognize
from tg_synth.steps.relate import relate

BLOCKED = "blocked"
SKIPPED = "skipped"
PENDING = "pending"


@dataclass
class Backends:
    mllm: ChatBackend
    llm: ChatBackend
    detector: Detector

    async def aclose(self) -> None:
        await self.mllm.aclose()
        if self.llm is not self.mllm:
            await self.llm.aclose()


@dataclass
class ItemOutcome:
    """Where one image got to: a state per step, the rows read, and the facts for QA building."""

    item: ImageItem
    states: dict[str, tuple[str, str]] = field(default_factory=dict)
    rows: dict[str, Row] = field(default_factory=dict)
    facts: ImageFacts | None = None

    def record(self, step: str, row: Row) -> bool:
        self.rows[step] = row
        self.states[step] = (row.status, row.reason)
        return row.status == DONE

    def mark(self, steps: tuple[str, ...], state: str, reason: str) -> None:
        for s in steps:
            self.states.setdefault(s, (state, reason))


class Pipeline:
    def __init__(
        self,
        cfg: SynthConfig,
        inputs: Inputs,
        out_dir: Path,
        cache: StepCache,
        backends: Backends,
        prompts: PromptSet,
    ) -> None:
        self.cfg = cfg
        self.inputs = inputs
        self.out_dir = out_dir
        self.cache = cache
        self.backends = backends
        self.prompts = prompts
        self.batcher = DetectorBatcher(backends.detector)
        self.builder = QABuilder(cfg.qa, prompts["questions"], cfg.filters.max_option_iou, cfg.seed)
        q = cfg.qa
        self.want_refer = q.rec + q.reg + q.text2obj > 0
        self.want_converse = q.grounded_conv > 0
        self.want_describe = q.grounded_desc > 0
        self.window = 4 * max(cfg.backends.mllm.concurrency, cfg.backends.text.concurrency, cfg.backends.detector.batch_size)

    def image_path(self, item: ImageItem) -> str:
        if "://" in item.image or item.image.startswith("/"):
            return item.image
        return str(self.inputs.image_root / item.image)

    # one image --------------------------------------------------------------------------------
    async def process_item(self, item: ImageItem, ex: Executor, report: FilterReport) -> ItemOutcome:
        out = ItemOutcome(item)
        try:
            image = ImageRef.open(self.image_path(item), self.cache)
        except OSError as e:
            out.states["load"] = (QUARANTINED, f"cannot read image {self.image_path(item)}: {e.strerror or e}")
            out.mark(STEPS[1:], BLOCKED, "load failed")
            return out
        out.states["load"] = (DONE, "")
        try:
            return await self._chain(item, image, ex, report, out)
        except MissingResult as e:
            out.mark(STEPS, PENDING, str(e))
            return out

    async def _chain(
        self, item: ImageItem, image: ImageRef, ex: Executor, report: FilterReport, out: ItemOutcome
    ) -> ItemOutcome:
        cfg, b, p = self.cfg, self.backends, self.prompts
        r1 = await recognize(ex, b.mllm, p, item, image, cfg.grounding.max_objects)
        if not out.record("recognize", r1):
            out.mark(STEPS, BLOCKED, "recognize quarantined")
            return out
        report.update(r1.value.get("dropped", {}))
        labels = list(r1.value["objects"])
        if labels:
            r2 = await detect(ex, self.batcher, item, image, labels)
            if not out.record("ground", r2):
                out.mark(STEPS, BLOCKED, "ground quarantined")
                return out
            instances = grounded_instances(item, labels, r2, cfg.grounding, report)
        elif item.annotations:
            out.states["ground"] = (SKIPPED, "no objects listed: annotations only")
            instances = grounded_instances(item, [], Row("", "ground", DONE, value={"detections": []}),
                                           cfg.grounding, report)
        else:
            instances = []
        if not instances:
            out.mark(STEPS, SKIPPED, "no grounded objects")
            return out

        relations: list[Triple] = []
        if len(instances) < 2:
            out.states["relate"] = (SKIPPED, "fewer than two objects")
        else:
            r3 = await relate(ex, b.mllm, p, item, image, instances, cfg.backends.mllm.max_relations)
            if not out.record("relate", r3):
                out.mark(("refer", "converse", "describe"), BLOCKED, "relate quarantined")
            else:
                report.update(r3.value.get("dropped", {}))
                relations = [Triple.from_dict(t) for t in r3.value["relations"]]

        facts = ImageFacts(
            item,
            self.sample_image(item),
            instances,
            usable_object_images(instances, item.width, item.height, cfg.filters, report),
            relations,
        )
        out.facts = facts
        if out.states.get("relate", (DONE, ""))[0] != DONE and len(instances) >= 2:
            return out  # the text steps need the relations
        calls: dict[str, Any] = {}
        if self.want_refer:
            calls["refer"] = refer(ex, b.llm, p, item, instances, relations)
        if self.want_converse:
            calls["converse"] = converse(ex, b.llm, p, item, instances, relations, cfg.qa.conversation_rounds)
        if self.want_describe:
            calls["describe"] = describe(ex, b.llm, p, item, instances, relations)
        rows = await asyncio.gather(*calls.values())
        for step, row in zip(calls, rows, strict=True):
            if not out.record(step, row):
                continue
            if step == "refer":
                report.update(row.value.get("dropped", {}))
                facts.expressions = {int(k): v for k, v in row.value["expressions"].items()}
            elif step == "converse":
                facts.conversation = row.value["turns"]
            else:
                facts.description = row.value["description"]
        out.mark(("refer", "converse", "describe"), SKIPPED, "no QA of this kind asked for")
        return out

    def sample_root(self) -> tuple[Path | None, str]:
        """The directory sample image paths are relative to (``None``: absolute), and their prefix.

        Images under the run directory (the generated shapes world) are written relative to the run
        directory itself, so a trainer that takes a data source's parent directory as its image root
        finds them with no setting; other images stay relative to the input root.
        """
        if self.cfg.output.absolute_image_paths:
            return None, ""
        root, out = self.inputs.image_root.resolve(), self.out_dir.resolve()
        inside = _relative_to(root, out)
        if inside is None:
            return root, ""
        return out, "" if inside == "." else inside + "/"

    def sample_image(self, item: ImageItem) -> str:
        root, prefix = self.sample_root()
        if root is None or "://" in item.image or item.image.startswith("/"):
            return self.image_path(item)
        return prefix + item.image

    # the live pass ----------------------------------------------------------------------------
    async def produce(self, on_item: Callable[[ItemOutcome], None] | None = None) -> Executor:
        """Run every image's chain, committing each finished step; returns the executor's counts."""
        ex = Executor(self.cache)
        limit = asyncio.Semaphore(self.window)

        async def one(item: ImageItem) -> None:
            try:
                outcome = await self.process_item(item, ex, FilterReport())
                if on_item is not None:
                    on_item(outcome)
            finally:
                limit.release()

        try:
            async with asyncio.TaskGroup() as tg:
                for item in self.inputs.items:
                    await limit.acquire()
                    tg.create_task(one(item))
        except BaseExceptionGroup as group:
            fatal = [e for e in _leaves(group) if isinstance(e, FatalBackendError)]
            raise (fatal[0] if fatal else _leaves(group)[0]) from None
        finally:
            await self.batcher.aclose()
        return ex

    # the assembly pass ------------------------------------------------------------------------
    async def assemble(self, live: Executor | None = None, seconds: float = 0.0) -> dict[str, Any]:
        """Replay every image from the cache in input order and write the output; returns the manifest."""
        ex = Executor(self.cache, replay=True)
        report = FilterReport()
        stage2 = ShardWriter(self.out_dir, "stage2", self.cfg.output.shard_rows)
        stage3 = ShardWriter(self.out_dir, "stage3", self.cfg.output.shard_rows)
        crops = CropWriter(self.out_dir, self.cfg.output.save_crops)
        states: dict[str, Counter[str]] = {s: Counter() for s in STEPS}
        usage: dict[str, Counter[str]] = {s: Counter() for s in STEPS}
        seen_keys: set[str] = set()
        failures: Counter[str] = Counter()
        s1_objects = instances_total = 0
        items_with_samples = 0
        quarantine_tmp = self.out_dir / "quarantine.jsonl.tmp"
        with quarantine_tmp.open("w", encoding="utf-8") as qf:
            for failure in self.inputs.failures:
                states["load"][QUARANTINED] += 1
                failures[f"load: {failure['reason'].split(':')[0]}"] += 1
                qf.write(json.dumps({"image_id": failure["id"], "image": failure["image"], "step": "load",
                                     "reason": failure["reason"], "key": None}) + "\n")
            for item in self.inputs.items:
                outcome = await self.process_item(item, ex, report)
                for step in STEPS:
                    state, reason = outcome.states.get(step, (PENDING, "not reached"))
                    states[step][state] += 1
                    if state == QUARANTINED:
                        failures[f"{step}: {reason_kind(reason)}"] += 1
                        row = outcome.rows.get(step)
                        qf.write(json.dumps({"image_id": item.id, "image": item.image, "step": step, "reason": reason,
                                             "key": row.key if row else None, "raw": row.raw[:500] if row else ""},
                                            ensure_ascii=False) + "\n")
                for step, row in outcome.rows.items():
                    if row.key and row.key not in seen_keys:
                        seen_keys.add(row.key)
                        u = usage[step]
                        u["calls"] += row.calls
                        u["prompt_tokens"] += row.prompt_tokens
                        u["completion_tokens"] += row.completion_tokens
                        u["cost_micro"] += round(row.cost * 1e6)
                if outcome.facts is None:
                    continue
                instances_total += len(outcome.facts.instances)
                s1_objects += len(s1_dictionary(outcome.facts.instances))
                samples = self.builder.build(outcome.facts, report)
                items_with_samples += bool(samples)
                for sample in samples:
                    (stage2 if stage_of(sample) == 2 else stage3).add(sample)
                    crops.add_sample(sample, self.image_path(item))
        quarantine_tmp.replace(self.out_dir / "quarantine.jsonl")
        s2, s3, cr = stage2.close(), stage3.close(), crops.close()
        steps_out = {}
        for step in STEPS:
            u = usage[step]
            steps_out[step] = {
                **{k: states[step][k] for k in (DONE, QUARANTINED, BLOCKED, SKIPPED, PENDING)},
                "calls": u["calls"], "prompt_tokens": u["prompt_tokens"], "completion_tokens": u["completion_tokens"],
                "cost": u["cost_micro"] / 1e6,
                "computed_this_run": live.computed[step] if live else 0,
            }
        tasks = dict(sorted((s2["tasks"] | s3["tasks"]).items()))
        manifest = {
            "format": FORMAT,
            "image_root": str(self.sample_root()[0]) if self.sample_root()[0] else None,
            "image_paths": "absolute" if self.cfg.output.absolute_image_paths else "relative to image_root",
            "stage2": s2,
            "stage3": s3,
            "tasks": tasks,
            "crops": cr,
            "items": {"total": len(self.inputs.items) + len(self.inputs.failures),
                      "with_samples": items_with_samples, "instances": instances_total, "s1_objects": s1_objects},
            "steps": steps_out,
            "filtered": report.to_dict(),
            "merged": dict(report.merged),
            "failures": {"total": sum(failures.values()), "by_reason": dict(failures.most_common()),
                         "path": "quarantine.jsonl"},
            "cost": {
                "total": sum(s["cost"] for s in steps_out.values()),
                "prompt_tokens": sum(s["prompt_tokens"] for s in steps_out.values()),
                "completion_tokens": sum(s["completion_tokens"] for s in steps_out.values()),
                "calls": sum(s["calls"] for s in steps_out.values() if s is not steps_out["ground"]),
            },
            "backends": {"mllm": self.backends.mllm.name, "llm": self.backends.llm.name,
                         "detector": self.backends.detector.name},
            "prompts": self.prompts.ids(),
            "config": self.cfg.to_dict(),
            "live_seconds": round(seconds, 3),
        }
        write_json_atomic(self.out_dir / "manifest.json", manifest)
        return manifest


def reason_kind(reason: str) -> str:
    """A failure reason without its particulars, for counting ("HTTP 500 after 6 attempts" stays)."""
    text = re.sub(r"\s*\([^()]*\)", "", reason)
    text = ": ".join(text.split(": ")[:2])
    return text.split(" at character")[0][:120]


def _relative_to(path: Path, root: Path) -> str | None:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return None


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    out: list[BaseException] = []
    for e in group.exceptions:
        out.extend(_leaves(e) if isinstance(e, BaseExceptionGroup) else [e])
    return out


def log_event(out_dir: Path, event: str, **fields: Any) -> None:
    with (out_dir / "log.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps({"time": round(time.time(), 3), "event": event, **fields}, ensure_ascii=False) + "\n")

