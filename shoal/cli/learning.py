"""Commands that measure and teach classifiers: `eval` and `train`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from shoal.cli.common import (
    LABELLED,
    ConfigOption,
    Ticker,
    console,
    engine,
    escape,
    input_file,
    literal,
    model_ref,
    output_file,
    print_json,
)

if TYPE_CHECKING:
    from rich.table import Table

    from shoal.evaluation import Evaluation
    from shoal.training import TrainReport


def eval_(
    data: Annotated[Path, typer.Argument(help="Labelled data: CSV, JSONL, or CLINC150-style JSON.")],
    text: Annotated[str, typer.Option("--text", help="Column (or key) holding the text.")] = "text",
    label: Annotated[str, typer.Option("--label", help="Column (or key) holding the gold label.")] = "label",
    split: Annotated[str, typer.Option(help="Split of a CLINC150-style JSON file.")] = "test",
    per_label: Annotated[int | None, typer.Option(help="Stratified sample: at most this many rows per label.")] = None,
    out_of_scope: Annotated[
        int | None, typer.Option("--oos", help="At most this many out-of-scope rows (CLINC150 'oos').")
    ] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="backend:model to evaluate.")] = None,
    target: Annotated[float, typer.Option(help="System accuracy the threshold must reach.")] = 0.9,
    frontier_accuracy: Annotated[float, typer.Option(help="Accuracy assumed for escalated items.")] = 1.0,
    out: Annotated[
        Path | None, typer.Option(help="JSONL of predictions, written as they come; re-running resumes.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    specialist: Annotated[
        str | None,
        typer.Option(
            help="Evaluate this configured classifier as it answers now (its trained head, if active) "
            "instead of prompting --model over the data's labels."
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Evaluate a classifier on labelled data and recommend a threshold."""
    import asyncio

    from shoal.evaluation import eval_set, evaluate

    ref = model_ref(model) if model else None
    if out is not None:
        output_file(out, "--out")
    input_file(data, "labelled data", LABELLED)
    chosen = eval_set(
        data, text_column=text, label_column=label, split=split, per_label=per_label, out_of_scope=out_of_scope
    )
    shoal = engine(config)
    with Ticker("eval") as ticker:

        def update(what: str, done: int, total: int, accuracy: float) -> None:
            ticker.update(what, done, total, f"acc {accuracy:.2f}")

        work = evaluate(
            shoal,
            chosen,
            model=ref,
            specialist=specialist,
            out=out,
            target_accuracy=target,
            frontier_accuracy=frontier_accuracy,
            progress=update,
        )
        result = asyncio.run(shoal.closing(work))
    if as_json:
        print_json(result.report.model_dump_json())
        return
    print_eval(result, data)


def print_eval(evaluation: Evaluation, data: Path) -> None:
    from rich.table import Table

    result = evaluation.report
    summary = Table(title=literal(f"{evaluation.what} on {data.name}: {result.n} rows"), show_header=False)
    summary.add_column("value", justify="right")
    summary.add_row("rows in scope / out of scope", f"{result.n_in_scope} / {result.n_out_of_scope}")
    summary.add_row("accuracy (in scope)", f"{result.in_scope_accuracy:.3f}")
    summary.add_row("accuracy (all rows)", f"{result.accuracy:.3f}")
    summary.add_row("macro-F1 (in scope)", f"{result.macro_f1:.3f}")
    summary.add_row("ECE", f"{result.ece:.3f}")
    summary.add_row("AUROC, confidence vs correct", "-" if result.auroc is None else f"{result.auroc:.3f}")
    summary.add_row("mean confidence in scope", f"{result.mean_confidence_in_scope:.3f}")
    if result.mean_confidence_out_of_scope is not None:
        summary.add_row("mean confidence out of scope", f"{result.mean_confidence_out_of_scope:.3f}")
    summary.add_row("seconds per item", f"{result.seconds_per_item:.3f}")
    summary.add_row("unusable replies", str(result.errors))
    console.print(summary)
    table = Table(title=f"threshold sweep (frontier accuracy {result.frontier_accuracy:.2f})")
    for column in ("threshold", "escalated", "accepted acc.", "system acc.", "oos escalated"):
        table.add_column(column, justify="right")
    for row in result.table:
        table.add_row(
            f"{row.threshold:.3f}",
            f"{row.escalated:.1%}",
            "-" if row.accepted_accuracy is None else f"{row.accepted_accuracy:.3f}",
            f"{row.system_accuracy:.3f}",
            "-" if row.out_of_scope_escalated is None else f"{row.out_of_scope_escalated:.1%}",
        )
    console.print(table)
    best = result.recommended
    if best is None:
        console.print(f"no threshold reaches system accuracy {result.target_accuracy:.2f}")
    else:
        console.print(
            f"recommended threshold: [bold]{best.threshold:.2f}[/bold] reaches {best.system_accuracy:.3f} "
            f"(target {result.target_accuracy:.2f}) escalating {best.escalated:.1%} of items"
            + (
                f"; out-of-scope escalated: {best.out_of_scope_escalated:.1%}"
                if best.out_of_scope_escalated is not None
                else ""
            )
        )


def train(
    specialist: Annotated[
        str, typer.Argument(help="The classifier or extractor to train, e.g. category, intent, entities.")
    ],
    data: Annotated[
        list[Path] | None,
        typer.Option(
            "--data", "-d", help="Labelled CSV, JSONL or CLINC150-style JSON (repeatable); kept in the store."
        ),
    ] = None,
    text: Annotated[str, typer.Option("--text", help="Column (or key) holding the text.")] = "text",
    label: Annotated[str, typer.Option("--label", help="Column (or key) holding the label.")] = "label",
    split: Annotated[str, typer.Option(help="Split of a CLINC150-style JSON file.")] = "train",
    per_label: Annotated[
        int | None, typer.Option(help="Take at most this many rows per label from the files (stratified).")
    ] = None,
    holdout: Annotated[float, typer.Option(help="Share of examples held out to compare old and new.")] = 0.2,
    min_per_label: Annotated[int, typer.Option(help="Fewer examples than this for a label is an error.")] = 3,
    baseline: Annotated[
        int, typer.Option(help="Held-out items to put to the prompted classifier when no head is active (0: skip).")
    ] = 200,
    force: Annotated[bool, typer.Option(help="Activate the new head even if it measures worse.")] = False,
    activate: Annotated[
        int | None, typer.Option(help="Do not train: make this stored version the active head (roll back).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    config: ConfigOption = None,
) -> None:
    """Train a classifier head on embeddings from files and from escalated answers (the flywheel)."""
    import asyncio

    from shoal.evaluation import training_rows
    from shoal.span_training import span_rows
    from shoal.specialists.extractor import Extractor, text_fields

    for path in data or []:
        input_file(path, "training data", LABELLED + ", or leave --data out to train on what the store keeps")
    shoal = engine(config)
    learner = shoal.learner(specialist)
    if activate is not None:
        shoal.activate_head(specialist, activate)
        console.print(literal(f"{specialist}: head v{activate} is active"))
        return
    with Ticker("train") as ticker:
        ticker.note(f"reading {len(data or [])} file{'s' if len(data or []) != 1 else ''} of labelled data")
        rows = [
            row
            for path in data or []
            for row in (
                # an extractor learns spans: field -> value per text (Bitext's entity_type/entity_value/offsets)
                span_rows(path, text_fields(learner.output_type), text_column=text)
                if isinstance(learner, Extractor)
                else training_rows(path, text_column=text, label_column=label, split=split, per_label=per_label)
            )
        ]
        work = shoal.train(
            specialist,
            files=rows,
            holdout=holdout,
            min_per_label=min_per_label,
            baseline=baseline,
            force=force,
            progress=ticker.update,
        )
        result = asyncio.run(shoal.closing(work))
    if as_json:
        print_json(result.model_dump_json())
        return
    print_training(result)


def print_training(result: TrainReport) -> None:
    from rich.table import Table

    sources = ", ".join(f"{n} {source}" for source, n in sorted(result.by_source.items()))
    console.print(
        f"[bold]{escape(result.specialist)}[/bold]: {result.examples} examples ({escape(sources)}), "
        f"{result.labels} labels; {result.n_train} to fit, {result.n_holdout} held out; "
        f"embeddings of {escape(str(result.embed_model))}: "
        f"{result.embedded} new, {result.reused} from the cache"
        + (f", {result.texts_per_second:.1f} texts/s" if result.texts_per_second else "")
    )
    if result.labels_without_examples:
        missing = ", ".join(result.labels_without_examples[:10])
        more = (
            f" and {len(result.labels_without_examples) - 10} more" if len(result.labels_without_examples) > 10 else ""
        )
        console.print(
            f"[yellow]labels with no examples (the head never answers them):[/yellow] {escape(missing)}{more}"
        )
    table = Table(title=f"held-out comparison (threshold {result.after.threshold:.2f})")
    for column in ("", "n", "accuracy", "macro-F1", "ECE", "AUROC", "escalated", "accepted right"):
        table.add_column(column, justify="right" if column else "left")
    for metrics in (result.before, result.after):
        if metrics is None:
            continue
        table.add_row(
            literal(metrics.what),
            str(metrics.n),
            f"{metrics.accuracy:.3f}",
            f"{metrics.macro_f1:.3f}",
            f"{metrics.ece:.3f}",
            "-" if metrics.auroc is None else f"{metrics.auroc:.3f}",
            f"{metrics.escalated:.1%}",
            "-" if metrics.accepted_accuracy is None else f"{metrics.accepted_accuracy:.1%}",
        )
    console.print(table)
    if result.fields:  # a span head: how each field does on its own
        console.print(field_table(result))
    state = "[green]activated[/green]" if result.activated else "[yellow]kept inactive[/yellow]"
    console.print(f"head v{result.version} {state}: {escape(result.reason)} (temperature {result.temperature:.2f})")
    if not result.activated:
        console.print(literal(f"activate it anyway with `shoal train {result.specialist} --activate {result.version}`"))


def field_table(result: TrainReport) -> Table:
    from rich.table import Table

    def share(value: float | None) -> str:
        return "-" if value is None else f"{value:.1%}"

    table = Table(title="held-out, per field (spans)")
    for column in ("field", "n", "values", "right", "values right", "accepted", "ECE", "AUROC"):
        table.add_column(column, justify="left" if column == "field" else "right")
    for field, m in result.fields.items():
        table.add_row(
            literal(field),
            str(m.get("n", 0)),
            f"{m.get('values', 0)}/{m.get('gold_values', 0)}",
            share(m.get("accuracy")),
            share(m.get("value_accuracy")),
            share(m.get("accepted")),
            f"{m.get('ece', 0.0):.3f}",
            "-" if m.get("auroc") is None else f"{m['auroc']:.3f}",
        )
    return table
