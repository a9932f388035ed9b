"""Checking a dataset before a long training run: every record parses, every image is there and
has the stated size, every box lies on its image, and the text shows what the objects say.

Everything wrong is counted by reason with example locations, never only the first problem.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import fsspec

from tg_data.coords import render_box
from tg_data.io import DataError, SkipReport, read_samples
from tg_data.readers._common import image_size_from_file
from tg_data.schema import Sample, Show
from tg_data.shapes.dataset import read_manifest

# A box may reach this many pixels past its image's edge (annotation rounding) before it is "bad".
EDGE_SLACK_PX = 1.0


@dataclass(frozen=True)
class SampleFile:
    """One file of samples, with the folder its relative image paths start from."""

    label: str  # split name, or the file's own name
    path: str
    image_root: str


def _parent(path: str) -> str:
    p = path.rstrip("/")
    return p.rsplit("/", 1)[0] if "/" in p else "."


def is_shapes_dataset(path: str) -> bool:
    fs, p = fsspec.core.url_to_fs(path)
    return fs.isdir(p) and fs.exists(f"{p.rstrip('/')}/manifest.json")


def sample_files(path: str, image_root: str | None = None) -> list[SampleFile]:
    """The sample files behind ``path``: the splits of a shapes dataset, or the file or shard folder
    itself. Relative image paths start from ``image_root`` or else the dataset's folder."""
    fs, p = fsspec.core.url_to_fs(path)
    if not fs.exists(p):
        raise DataError(f"{path}: no such file or folder")
    root = path.rstrip("/")
    if is_shapes_dataset(path):
        manifest = read_manifest(path)
        return [SampleFile(split, f"{root}/{split}.parquet", image_root or root) for split in manifest["splits"]]
    base = image_root or (root if fs.isdir(p) else _parent(root))
    return [SampleFile(root.rsplit("/", 1)[-1], path, base)]


def iter_sample_files(files: list[SampleFile], skip: SkipReport | None = None) -> Iterator[tuple[SampleFile, Sample]]:
    for sf in files:
        for sample in read_samples(sf.path, skip):
            yield sf, sample


@dataclass
class ValidationReport:
    samples: int = 0
    tasks: Counter[str] = field(default_factory=Counter)
    sources: Counter[str] = field(default_factory=Counter)
    per_file: dict[str, Counter[str]] = field(default_factory=dict)
    images: int = 0
    problems: SkipReport = field(default_factory=lambda: SkipReport(max_examples=3))

    @property
    def ok(self) -> bool:
        return self.problems.total == 0


class _ImageChecker:
    """Existence and size of each distinct image, looked up once."""

    def __init__(self) -> None:
        self.known: dict[str, tuple[int, int] | str] = {}

    def __call__(self, uri: str) -> tuple[int, int] | str:
        """The image's size, or why it cannot be used."""
        if uri not in self.known:
            try:
                self.known[uri] = image_size_from_file(uri)
            except DataError as e:
                self.known[uri] = "image not found" if "not found" in str(e) else "image cannot be read"
        return self.known[uri]


def _resolve(root: str, path: str) -> str:
    if "://" in path or path.startswith("/"):
        return path
    return f"{root.rstrip('/')}/{path}"


def sample_problems(
    sample: Sample, image_root: str, images: _ImageChecker | None = None, check_images: bool = True
) -> list[str]:
    """What is wrong with a sample that parsed: images and their sizes (when ``check_images``),
    boxes against the image, coordinates that the text should show."""
    images = images or _ImageChecker()
    out: list[str] = []
    size = sample.size
    if sample.image and check_images:
        found = images(_resolve(image_root, sample.image))
        if isinstance(found, str):
            out.append(f"{found} ({sample.image})")
        elif size is not None and tuple(found) != size:
            out.append(f"image is {found[0]}x{found[1]} but the sample says {size[0]}x{size[1]}")
        elif size is None:
            size = found
    for k, obj in enumerate(sample.objects):
        if obj.image and check_images:
            found = images(_resolve(image_root, obj.image))
            if isinstance(found, str):
                out.append(f"object {k}: object image {found}")
        if size is not None and not obj.image:
            x1, y1, x2, y2 = obj.box.to_pixels(*size)
            w, h = size
            if x1 < -EDGE_SLACK_PX or y1 < -EDGE_SLACK_PX or x2 > w + EDGE_SLACK_PX or y2 > h + EDGE_SLACK_PX:
                out.append(f"object {k}: box reaches outside the {w}x{h} image, into the padding")
        if obj.show == Show.COORD.value and not any(render_box(obj.box) in t.text for t in sample.turns):
            out.append(f"object {k}: shown as coordinates, but its coordinate text is in no turn")
    return out


def validate_dataset(path: str, image_root: str | None = None, check_images: bool = True) -> ValidationReport:
    """Check every record of a sample file, shard folder or shapes dataset; nothing stops at the
    first problem."""
    report = ValidationReport()
    files = sample_files(path, image_root)
    images = _ImageChecker()
    for sf in files:
        counts = report.per_file.setdefault(sf.label, Counter())
        for sample in read_samples(sf.path, report.problems):
            report.samples += 1
            report.tasks[sample.task] += 1
            report.sources[sample.source] += 1
            counts[sample.task] += 1
            for problem in sample_problems(sample, sf.image_root, images, check_images):
                report.problems.add(_short(problem), f"{sf.path}: sample {sample.id!r}")
    report.images = len(images.known)
    if is_shapes_dataset(path):
        _check_manifest(path, report)
    return report


def _short(problem: str) -> str:
    """The reason key: the message without the image name in parentheses."""
    return problem.split(" (", 1)[0] if problem.endswith(")") else problem


def _check_manifest(path: str, report: ValidationReport) -> None:
    manifest = read_manifest(path)
    for split, info in manifest["splits"].items():
        found = report.per_file.get(split, Counter())
        stated = Counter(info.get("tasks", {}))
        if found != stated:
            report.problems.add(
                "manifest counts differ from the samples", f"{path}/manifest.json: split {split!r}"
            )
