"""``tg-eval``: score prediction files of any model on the paper's benchmarks, and compare runs.

Every scoring command prints a Markdown table and, with ``--json OUT``, writes OUT and OUT's
``.md`` twin. Mistakes in input files or options end with one line on stderr and exit code 2.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from tg_eval.errors import USER_ERRORS, EvalError
from tg_eval.result import EvalResult

app = typer.Typer(
    help="Score predictions on REC, POPE, VQAv2, GQA, ScienceQA-IMG, MME, MMBench, LLaVA-Bench, "
    "description assessment and retrieval; compare runs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

F = TypeVar("F", bound=Callable[..., Any])

JsonOut = Annotated[Path | None, typer.Option("--json", help="Write the result here as JSON (and a .md table beside it).")]
Name = Annotated[str | None, typer.Option(help="Run name shown in tables and comparisons (default: the predictions file's stem).")]


def user_errors(fn: F) -> F:
    """Turn input mistakes into one clear line and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _emit(result: EvalResult, json_out: Path | None, inputs: dict[str, Any]) -> None:
    result.inputs.update({k: str(v) for k, v in inputs.items() if v is not None})
    typer.echo(result.to_markdown())
    if json_out is not None:
        j, m = result.write(json_out)
        typer.echo(f"wrote {j} and {m}")


def _one_of(**options: Any) -> str:
    given = [k for k, v in options.items() if v is not None]
    if len(given) != 1:
        names = " or ".join(f"--{k.replace('_', '-')}" for k in options)
        raise EvalError(f"give exactly one of {names}")
    return given[0]


def _name(name: str | None, path: Path) -> str:
    return name or path.stem


ModelDir = Annotated[Path | None, typer.Option("--model", help="A model directory to run first (needs the model extra): answers are appended to the predictions file as they finish (a rerun skips done ids), then scored.")]
ImageRoot = Annotated[Path | None, typer.Option(help="Folder the ground truth's image paths start from (default: the file's folder).")]
BatchSize = Annotated[int, typer.Option(help="Requests decoded together when running a model.")]
Device = Annotated[str | None, typer.Option(help="Device for --model: cpu, cuda, cuda:N (default: cuda if available).")]
Dtype = Annotated[str | None, typer.Option(help="Precision for --model: fp32, bf16, fp16 (default: bf16 on GPUs that support it).")]
Threads = Annotated[int | None, typer.Option(help="CPU threads for --model (default: torch's choice).")]


def _generate(
    requests: list,
    out: Path,
    model: Path,
    batch_size: int,
    device: str | None,
    dtype: str | None,
    threads: int | None,
    description: str,
) -> None:
    """Answer ``requests`` with the model at ``model``, appending to ``out``; ids already there are skipped."""
    from tg_eval.model import ModelPredictor
    from tg_eval.predictor import generate_predictions

    predictor = ModelPredictor.load(model, device=device, dtype=dtype, batch_size=batch_size, threads=threads)
    out.parent.mkdir(parents=True, exist_ok=True)
    stats = generate_predictions(predictor, requests, out, batch_size, progress=True, description=description)
    note = " (a line cut off by an earlier run was dropped and redone)" if stats.recovered_partial_line else ""
    typer.echo(f"{stats.generated} generated, {stats.skipped} already in {out}, {stats.total} in all{note}")


def _default_out(model: Path, bench: str, label: str) -> Path:
    return Path("runs") / "eval" / f"{model.name}-{bench}-{label}.jsonl"


@app.command()
@user_errors
def rec(
    predictions: Annotated[Path | None, typer.Option(help="JSON Lines {id, text}: the model's answers (with --model: where they are written).")] = None,
    truth: Annotated[Path | None, typer.Option(help="Ground-truth samples (.jsonl or .parquet) with task 'rec'.")] = None,
    shapes: Annotated[Path | None, typer.Option(help="A shapes-world dataset directory (its held-out split).")] = None,
    split: Annotated[str, typer.Option(help="Shapes split to score.")] = "test",
    threshold: Annotated[float, typer.Option(help="IoU needed for a hit.")] = 0.5,
    json_out: JsonOut = None,
    name: Name = None,
    model: ModelDir = None,
    image_root: ImageRoot = None,
    batch_size: BatchSize = 16,
    device: Device = None,
    dtype: Dtype = None,
    threads: Threads = None,
) -> None:
    """REC accuracy at IoU >= 0.5 in original-image pixels, per split (running --model first if given)."""
    from tg_data.io import read_samples
    from tg_eval.predictions import read_predictions
    from tg_eval.predictor import GenerationRequest
    from tg_eval.rec import rec_targets, score_rec
    from tg_eval.shapes import REC_MAX_NEW_TOKENS, shapes_samples

    source = _one_of(truth=truth, shapes=shapes)
    if source == "truth":
        samples = [s for s in read_samples(str(truth)) if s.task == "rec"]
        root, label, default_split = image_root or truth.parent, truth.stem, "all"  # type: ignore[union-attr]
    else:
        samples = shapes_samples(shapes, split, "rec")  # type: ignore[arg-type]
        root, label, default_split = shapes, f"shapes-{split}", f"shapes-{split}"
    if model is not None:
        predictions = predictions or _default_out(model, "rec", label)
        requests = [GenerationRequest.from_sample(s, str(root), max_new_tokens=REC_MAX_NEW_TOKENS) for s in samples]
        _generate(requests, predictions, model, batch_size, device, dtype, threads, "rec")
    elif predictions is None:
        raise EvalError("give --predictions FILE (or --model DIR to generate the predictions first)")
    targets = rec_targets(samples, default_split=default_split)
    result = score_rec(targets, read_predictions(predictions), _name(name, predictions), threshold)
    _emit(result, json_out, {"predictions": predictions, "truth": truth, "shapes": shapes, "model": model})


@app.command()
@user_errors
def pope(
    answers: Annotated[Path | None, typer.Option(help="JSON Lines {question_id, text}, keyed by the question file's ids (with --model: where they are written).")] = None,
    questions: Annotated[Path | None, typer.Option(help="LLaVA-style question file with a 'category' field.")] = None,
    labels: Annotated[Path | None, typer.Option(help="Directory with coco_pope_{random,popular,adversarial}.json.")] = None,
    shapes: Annotated[Path | None, typer.Option(help="A shapes-world dataset directory instead of --questions/--labels.")] = None,
    split: Annotated[str, typer.Option(help="Shapes split to score.")] = "test",
    label_prefix: Annotated[str, typer.Option(help="Label files are PREFIX_pope_<category>.json.")] = "coco",
    exact_text: Annotated[bool, typer.Option(help="Join on the exact question text, without POPE's spelling fixes.")] = False,
    suffix: Annotated[list[str] | None, typer.Option(help="A prompt suffix to strip from questions (repeatable); LLaVA's short-answer instruction is always stripped.")] = None,
    json_out: JsonOut = None,
    name: Name = None,
    model: ModelDir = None,
    image_root: Annotated[Path | None, typer.Option(help="Folder of the question file's images (with --model).")] = None,
    batch_size: BatchSize = 16,
    device: Device = None,
    dtype: Dtype = None,
    threads: Threads = None,
) -> None:
    """POPE accuracy, precision, recall, F1 and yes-ratio per category, joined by question identity
    (running --model first if given)."""
    from tg_eval.pope import pope_from_samples, read_pope_labels, read_pope_questions, score_pope
    from tg_eval.predictions import read_predictions
    from tg_eval.predictor import GenerationRequest
    from tg_eval.questions import DEFAULT_SUFFIXES, POPE_SPELLING_FIXES
    from tg_eval.shapes import POPE_MAX_NEW_TOKENS, shapes_samples

    if shapes is not None:
        if questions is not None or labels is not None:
            raise EvalError("give either --shapes or --questions with --labels, not both")
        samples = shapes_samples(shapes, split, "pope")
        qs, ls = pope_from_samples(samples)
        requests = [GenerationRequest.from_sample(s, str(shapes), max_new_tokens=POPE_MAX_NEW_TOKENS) for s in samples]
        label = f"shapes-{split}"
    else:
        if questions is None or labels is None:
            raise EvalError("give --questions and --labels (or --shapes DIR)")
        qs, ls = read_pope_questions(questions), read_pope_labels(labels, label_prefix)
        root = image_root or questions.parent
        requests = [GenerationRequest(id=q.id, prompt=f"<image>\n{q.text}", image=str(root / q.image),
                                      max_new_tokens=POPE_MAX_NEW_TOKENS) for q in qs]
        label = questions.stem
        if model is not None:
            missing = [r.image for r in requests if not Path(str(r.image)).is_file()]
            if missing:
                raise EvalError(f"{len(missing)} question image(s) not found under {root}, e.g. {missing[0]}; "
                                "pass --image-root")
    if model is not None:
        answers = answers or _default_out(model, "pope", label)
        _generate(requests, answers, model, batch_size, device, dtype, threads, "pope")
    elif answers is None:
        raise EvalError("give --answers FILE (or --model DIR to generate the answers first)")
    suffixes = (*DEFAULT_SUFFIXES, *(suffix or []))
    result = score_pope(qs, ls, read_predictions(answers), _name(name, answers), suffixes,
                        None if exact_text else POPE_SPELLING_FIXES)
    _emit(result, json_out, {"answers": answers, "questions": questions, "labels": labels, "shapes": shapes,
                             "model": model})


@app.command()
@user_errors
def vqav2(
    annotations: Annotated[Path, typer.Option(help="Official annotation file, or records {question_id, answers}.")],
    predictions: Annotated[Path, typer.Option(help="{question_id, answer} JSON array or {question_id, text} JSON Lines.")],
    json_out: JsonOut = None,
    name: Name = None,
) -> None:
    """VQAv2 accuracy with the official normalisation and 10-annotator rule."""
    from tg_eval.predictions import read_predictions
    from tg_eval.vqav2 import read_vqa_annotations, score_vqav2

    result = score_vqav2(read_vqa_annotations(annotations), read_predictions(predictions), _name(name, predictions))
    _emit(result, json_out, {"annotations": annotations, "predictions": predictions})


@app.command()
@user_errors
def gqa(
    questions: Annotated[Path, typer.Option(help="GQA question file (e.g. testdev_balanced_questions.json).")],
    predictions: Annotated[Path, typer.Option(help="{question_id, text} JSON Lines or {questionId, prediction} JSON.")],
    json_out: JsonOut = None,
    name: Name = None,
) -> None:
    """GQA exact-match accuracy, overall and per structural type."""
    from tg_eval.gqa import read_gqa_questions, score_gqa
    from tg_eval.predictions import read_predictions

    preds = read_predictions(predictions, id_fields=("question_id", "questionId", "id"))
    result = score_gqa(read_gqa_questions(questions), preds, _name(name, predictions))
    _emit(result, json_out, {"questions": questions, "predictions": predictions})


@app.command()
@user_errors
def scienceqa(
    problems: Annotated[Path, typer.Option(help="ScienceQA problems.json.")],
    predictions: Annotated[Path, typer.Option(help="{question_id, text} JSON Lines; question_id is the problem id.")],
    split: Annotated[str, typer.Option(help="ScienceQA split.")] = "test",
    json_out: JsonOut = None,
    name: Name = None,
) -> None:
    """ScienceQA-IMG option accuracy (test questions with an image)."""
    from tg_eval.predictions import read_predictions
    from tg_eval.scienceqa import read_scienceqa, score_scienceqa

    result = score_scienceqa(read_scienceqa(problems, split), read_predictions(predictions), _name(name, predictions))
    _emit(result, json_out, {"problems": problems, "predictions": predictions})


@app.command()
@user_errors
def mme(
    truth: Annotated[Path, typer.Option(help="MME records {question_id, category, question, answer} (.parquet, .jsonl).")],
    predictions: Annotated[Path, typer.Option(help="{question_id, prompt, text} JSON Lines (or {id, text} when the truth has ids).")],
    json_out: JsonOut = None,
    name: Name = None,
) -> None:
    """MME acc, acc+ and score per sub-task; perception and cognition totals."""
    from tg_eval.mme import mme_predictions, read_mme, score_mme
    from tg_eval.records import read_records

    preds = mme_predictions(read_records(predictions, "predictions"), str(predictions))
    result = score_mme(read_mme(truth), preds, _name(name, predictions))
    _emit(result, json_out, {"truth": truth, "predictions": predictions})


@app.command()
@user_errors
def mmbench(
    questions: Annotated[Path, typer.Option(help="MMBench TSV (or JSON/Parquet with the same columns).")],
    predictions: Annotated[Path, typer.Option(help="{question_id, round_id, text} JSON Lines.")],
    json_out: JsonOut = None,
    name: Name = None,
) -> None:
    """MMBench circular and single-pass accuracy, overall and per category."""
    from tg_eval.mmbench import mmbench_predictions, read_mmbench, score_mmbench
    from tg_eval.records import read_records

    preds = mmbench_predictions(read_records(predictions, "predictions"), str(predictions))
    result = score_mmbench(read_mmbench(questions), preds, _name(name, predictions))
    _emit(result, json_out, {"questions": questions, "predictions": predictions})


JudgeModel = Annotated[str | None, typer.Option(help="Judge model (default: $TG_EVAL_JUDGE_MODEL).")]
JudgeUrl = Annotated[str | None, typer.Option(help="OpenAI-compatible base URL (default: $TG_EVAL_JUDGE_BASE_URL); the key is read from $TG_EVAL_JUDGE_API_KEY only.")]
Attempts = Annotated[int, typer.Option(help="Tries per item while the judge's replies are malformed.")]


def _client(judge_model: str | None, judge_base_url: str | None, attempts: int):
    from tg_eval.judge import ChatClient, JudgeConfig

    if attempts < 1:
        raise EvalError(f"--attempts must be at least 1, got {attempts}")
    return ChatClient(JudgeConfig.from_env(model=judge_model, base_url=judge_base_url, attempts=attempts))


@app.command("llava-bench")
@user_errors
def llava_bench(
    questions: Annotated[Path, typer.Option(help="questions.jsonl {question_id, image, text, category}.")],
    context: Annotated[Path, typer.Option(help="context.jsonl {image, caption}.")],
    references: Annotated[Path, typer.Option(help="Reference answers {question_id, text} (answers_gpt4.jsonl).")],
    answers: Annotated[Path, typer.Option(help="The model's answers {question_id, text}.")],
    reviews: Annotated[Path, typer.Option(help="Judge review log (JSON Lines); an existing one is resumed.")],
    judge_model: JudgeModel = None,
    judge_base_url: JudgeUrl = None,
    attempts: Attempts = 3,
    json_out: JsonOut = None,
    name: Name = None,
) -> None:
    """LLaVA-Bench (in-the-wild) relative score from a judge."""
    from tg_eval.llava_bench import read_llava_bench, read_references, score_llava_bench
    from tg_eval.predictions import read_predictions

    qs, captions = read_llava_bench(questions, context)
    result = score_llava_bench(qs, captions, read_references(references), read_predictions(answers),
                               _client(judge_model, judge_base_url, attempts), reviews, _name(name, answers), progress=True)
    _emit(result, json_out, {"questions": questions, "answers": answers, "reviews": reviews})


@app.command()
@user_errors
def describe(
    predictions: Annotated[Path, typer.Option(help="Descriptions {id, text}.")],
    reviews: Annotated[Path, typer.Option(help="Judge review log (JSON Lines); an existing one is resumed.")],
    truth: Annotated[Path | None, typer.Option(help="References {id, context}.")] = None,
    shapes: Annotated[Path | None, typer.Option(help="A shapes-world dataset: references from its grounded descriptions.")] = None,
    split: Annotated[str, typer.Option(help="Shapes split.")] = "test",
    judge_model: JudgeModel = None,
    judge_base_url: JudgeUrl = None,
    attempts: Attempts = 3,
    json_out: JsonOut = None,
    name: Name = None,
) -> None:
    """Description assessment: Quality, Richness, Accuracy (1-5) from a judge."""
    from tg_eval.describe import describe_items_from_samples, read_describe_items, score_descriptions
    from tg_eval.predictions import read_predictions
    from tg_eval.shapes import shapes_samples

    source = _one_of(truth=truth, shapes=shapes)
    items = read_describe_items(truth) if source == "truth" else describe_items_from_samples(
        shapes_samples(shapes, split, "grounded_desc"))  # type: ignore[arg-type]
    result = score_descriptions(items, read_predictions(predictions), _client(judge_model, judge_base_url, attempts),
                                reviews, _name(name, predictions), progress=True)
    _emit(result, json_out, {"predictions": predictions, "reviews": reviews, "truth": truth, "shapes": shapes})


@app.command()
@user_errors
def retrieval(
    sim: Annotated[Path, typer.Option(help=".npy images x captions similarity, or .npz with 'sim' or 'images'/'texts' embeddings.")],
    protocol: Annotated[str, typer.Option(help="flickr30k-1k, coco-1k (5 folds), coco-5k, or custom (any N x kN).")],
    captions_per_image: Annotated[int, typer.Option(help="Captions per image; caption j belongs to image j // k.")] = 5,
    json_out: JsonOut = None,
    name: Name = None,
) -> None:
    """Image-text retrieval R@1/5/10 both ways, rSum and medr."""
    from tg_eval.retrieval import load_similarity, score_retrieval

    result = score_retrieval(load_similarity(sim), protocol, _name(name, sim), captions_per_image)
    _emit(result, json_out, {"sim": sim, "protocol": protocol})


RUNNABLE = ("rec", "pope")


@app.command()
@user_errors
def run(
    bench: Annotated[str, typer.Argument(help="Benchmark to run: rec or pope.")],
    model: Annotated[Path, typer.Option("--model", help="Model directory (save_pretrained output); needs the model extra.")],
    predictions: Annotated[Path | None, typer.Option(help="Where answers are appended (default: runs/eval/<model>-<bench>-<data>.jsonl); a rerun skips done ids.")] = None,
    shapes: Annotated[Path | None, typer.Option(help="A shapes-world dataset directory (its held-out split).")] = None,
    split: Annotated[str, typer.Option(help="Shapes split.")] = "test",
    truth: Annotated[Path | None, typer.Option(help="rec: ground-truth samples (.jsonl or .parquet).")] = None,
    questions: Annotated[Path | None, typer.Option(help="pope: LLaVA-style question file.")] = None,
    labels: Annotated[Path | None, typer.Option(help="pope: directory with coco_pope_{random,popular,adversarial}.json.")] = None,
    image_root: ImageRoot = None,
    batch_size: BatchSize = 16,
    device: Device = None,
    dtype: Dtype = None,
    threads: Threads = None,
    json_out: JsonOut = None,
    name: Name = None,
) -> None:
    """Run a model on a benchmark (batched, resumable, with a progress bar), then score it."""
    if bench not in RUNNABLE:
        raise EvalError(f"tg-eval run takes one of {list(RUNNABLE)}, not {bench!r}; other benchmarks are scored "
                        "from prediction files")
    common = {"split": split, "json_out": json_out, "name": name, "model": model, "image_root": image_root,
              "batch_size": batch_size, "device": device, "dtype": dtype, "threads": threads}
    if bench == "rec":
        if questions is not None or labels is not None:
            raise EvalError("rec takes --shapes or --truth, not --questions/--labels")
        rec(predictions=predictions, truth=truth, shapes=shapes, threshold=0.5, **common)
    else:
        if truth is not None:
            raise EvalError("pope takes --shapes or --questions with --labels, not --truth")
        pope(answers=predictions, questions=questions, labels=labels, shapes=shapes, label_prefix="coco",
             exact_text=False, suffix=None, **common)


@app.command()
@user_errors
def compare(
    results: Annotated[list[Path], typer.Argument(help="Result JSON files written with --json.")],
    png: Annotated[Path, typer.Option(help="Where to write the bar chart.")] = Path("compare.png"),
    markdown: Annotated[Path | None, typer.Option(help="Also write the table to this Markdown file.")] = None,
) -> None:
    """Print runs side by side and write a bar chart of their headline numbers."""
    from tg_eval.compare import compare_chart, compare_table
    from tg_eval.result import load_result

    loaded = [load_result(p) for p in results]
    table = compare_table(loaded)
    typer.echo(table)
    if markdown is not None:
        markdown.parent.mkdir(parents=True, exist_ok=True)
        markdown.write_text(table, encoding="utf-8")
    typer.echo(f"wrote {compare_chart(loaded, png)}")


if __name__ == "__main__":
    app()
