"""The ``mlkit`` command line.

The CLI is the one place (with the notebooks) that configures logging; library
modules only log. Errors that mlkit raises on purpose are shown as one line
without a traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

import mlkit
from mlkit.errors import MlkitError

log = logging.getLogger(__name__)


class _Group(click.Group):
    """A group that turns mlkit's own errors into clean CLI errors."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MlkitError as exc:
            raise click.ClickException(str(exc)) from exc


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(mlkit.__version__, prog_name="mlkit")
@click.option("-v", "--verbose", count=True, help="Log debug messages.")
@click.option("-q", "--quiet", is_flag=True, help="Log warnings and errors only.")
def cli(verbose: int, quiet: bool) -> None:
    """mlkit: multimodal skin-condition classification, from data to deployment."""
    _setup_logging(verbose, quiet)


@cli.group(cls=_Group)
def data() -> None:
    """Generate demo data and prepare datasets into a manifest."""


@data.command("synth")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--n-samples",
    type=int,
    default=800,
    show_default=True,
    help="Images to generate across all datasets.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--image-size",
    type=int,
    default=64,
    show_default=True,
    help="Side of the square images, in pixels.",
)
@click.option(
    "--clean",
    is_flag=True,
    help="Inject no faults (no corrupt images or malformed rows).",
)
def data_synth(
    out_dir: Path, n_samples: int, seed: int, image_size: int, clean: bool
) -> None:
    """Write the synthetic demo dataset in the real source formats to OUT_DIR."""
    from mlkit.data.synthetic import SynthConfig, generate

    fields: dict[str, Any] = {
        "n_samples": n_samples,
        "seed": seed,
        "image_size": image_size,
    }
    if clean:
        fields.update(
            {
                name: 0
                for name in SynthConfig.__dataclass_fields__
                if name.startswith("n_") and name != "n_samples"
            }
        )
    summary = generate(out_dir, SynthConfig(**fields), progress=True)
    click.echo(f"wrote synthetic demo data to {out_dir}")
    click.echo(json.dumps(summary.counts, indent=2, sort_keys=True))


@data.command("prepare")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="YAML file of preprocessing parameters; flags override it.",
)
@click.option(
    "--data-root",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder holding one subfolder per source.",
)
@click.option(
    "--out-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the manifest, dataset card and quarantine report go.",
)
@click.option(
    "--source",
    "sources",
    multiple=True,
    help="A source to read (repeatable); default: all.",
)
@click.option("--min-samples-per-label", type=int, help="Drop rarer labels.")
@click.option(
    "--keep-unmapped/--drop-unmapped",
    default=None,
    help="Keep labels the taxonomy does not know (as their own labels).",
)
@click.option(
    "--image-check",
    type=click.Choice(["full", "header", "none"]),
    help="How thoroughly to validate images.",
)
@click.option("--seed", type=int, help="Seed of the split.")
@click.option(
    "--label-map",
    "label_map",
    multiple=True,
    metavar="RAW=TARGET",
    help="Extra label mapping (repeatable), applied before the taxonomy.",
)
def data_prepare(
    config_file: Path | None,
    label_map: tuple[str, ...],
    sources: tuple[str, ...],
    **flags: Any,
) -> None:
    """Standardize, harmonize, filter, validate and split into a manifest."""
    from mlkit.data.prepare import PrepareConfig, parse_config, prepare

    overrides = {k: v for k, v in flags.items() if v is not None}
    if sources:
        overrides["sources"] = list(sources)
    if label_map:
        pairs = {}
        for item in label_map:
            raw, sep, target = item.partition("=")
            if not sep or not raw.strip() or not target.strip():
                raise click.BadParameter(
                    f"expected RAW=TARGET, got {item!r}", param_hint="--label-map"
                )
            pairs[raw.strip()] = target.strip()
        overrides["label_map"] = pairs
    if config_file is not None:
        config = PrepareConfig.from_yaml(config_file, **overrides)
    else:
        for required in ("data_root", "out_dir"):
            if required not in overrides:
                raise click.UsageError(
                    f"--{required.replace('_', '-')} is required without --config"
                )
        config = parse_config(overrides, source="command line")
    result = prepare(config, progress=True)
    click.echo(f"manifest: {result.paths.manifest} ({len(result.manifest)} rows)")
    click.echo(f"dataset card: {result.paths.card}")
    click.echo(f"quarantine: {result.paths.quarantine} ({len(result.quarantine)} rows)")


@data.command("labels")
@click.argument(
    "labels_file", type=click.Path(dir_okay=False, exists=True, path_type=Path)
)
@click.option(
    "--taxonomy",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Taxonomy YAML; default: the packaged one.",
)
def data_labels(labels_file: Path, taxonomy: Path | None) -> None:
    """Resolve raw labels (one a line; # comments) through the taxonomy.

    Exits with status 1 when any label is unmapped, so it can guard a new
    dataset's labels in CI.
    """
    from mlkit.data.harmonize import Taxonomy

    tax = Taxonomy.load(taxonomy)
    unmapped = 0
    for line in labels_file.read_text(encoding="utf-8").splitlines():
        raw = line.strip()
        if not raw or raw.startswith("#"):
            continue
        res = tax.lookup(raw)
        target = res.label or (
            f"(excluded: {res.reason})" if res.reason else "UNMAPPED"
        )
        unmapped += res.kind == "unmapped"
        click.echo(f"{raw}\t{target}")
    click.echo(f"taxonomy {tax.version}: {unmapped} unmapped", err=True)
    if unmapped:
        sys.exit(1)


@cli.command("train")
@click.option(
    "--manifest",
    required=True,
    type=click.Path(path_type=Path),
    help="Manifest file, or the folder that holds it.",
)
@click.option(
    "--out-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where history, checkpoints and the model go.",
)
@click.option(
    "--config",
    "config_name",
    default="ci",
    show_default=True,
    help="Packaged training config (ci, full) or a YAML file.",
)
@click.option(
    "--data-root",
    type=click.Path(file_okay=False, path_type=Path),
    help="Image root; default: the one the manifest was prepared from.",
)
@click.option("--epochs", type=int, help="Override the config's epochs.")
@click.option("--seed", type=int, help="Override the config's seed.")
@click.option(
    "--backend",
    type=click.Choice(["local", "modal"]),
    default="local",
    show_default=True,
    help="Train here, or on a Modal GPU.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue an interrupted local run in OUT_DIR from its last epoch.",
)
def train_cmd(
    manifest: Path,
    out_dir: Path,
    config_name: str,
    data_root: Path | None,
    epochs: int | None,
    seed: int | None,
    backend: str,
    resume: bool,
) -> None:
    """Train the multimodal classifier on a prepared manifest."""
    from mlkit.cloud import run_training
    from mlkit.train.run import TrainRunConfig

    train = {k: v for k, v in {"epochs": epochs, "seed": seed}.items() if v is not None}
    config = TrainRunConfig.from_yaml(
        config_name,
        manifest=manifest,
        out_dir=out_dir,
        data_root=data_root,
        train=train or None,
    )
    if resume:
        if backend != "local":
            raise click.UsageError("--resume works with the local backend only")
        from mlkit.train.run import train_model

        summary = train_model(config, resume=True).to_dict()
    else:
        summary = run_training(config.model_dump(mode="json"), backend=backend)
    click.echo(json.dumps(summary, indent=2, sort_keys=True))


@cli.command("evaluate")
@click.option("--model-dir", required=True, type=click.Path(path_type=Path))
@click.option("--manifest", required=True, type=click.Path(path_type=Path))
@click.option(
    "--out-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the evaluation report (and gate) go.",
)
@click.option(
    "--min-macro-f1",
    type=float,
    envvar="MLKIT_MIN_MACRO_F1",
    help="Apply the deployment gate: write gate.json only if test "
    "macro-F1 is above this, else exit with status 1.",
)
@click.option(
    "--backend",
    type=click.Choice(["local", "modal"]),
    default="local",
    show_default=True,
)
def evaluate_cmd(
    model_dir: Path,
    manifest: Path,
    out_dir: Path,
    min_macro_f1: float | None,
    backend: str,
) -> None:
    """Evaluate a model on the test split; optionally apply the gate."""
    from mlkit.cloud import run_evaluation
    from mlkit.evaluate.gate import write_gate

    report = run_evaluation(
        {
            "model_dir": str(model_dir),
            "manifest": str(manifest),
            "out_dir": str(out_dir),
        },
        backend=backend,
    )
    metrics = report["metrics"]
    click.echo(
        f"test macro-F1 {metrics['macro_f1']:.4f}, accuracy "
        f"{metrics['accuracy']:.4f} on {metrics['n']} rows"
        + (" (synthetic data)" if report["synthetic"] else "")
    )
    if min_macro_f1 is not None:
        path = write_gate(out_dir / "gate.json", report, min_macro_f1)
        click.echo(f"gate passed: {path}")


@cli.group(cls=_Group)
def cloud() -> None:
    """Modal: keep data and models in the mlkit volume."""


@cloud.command("sync")
@click.argument(
    "local_dir", type=click.Path(file_okay=False, exists=True, path_type=Path)
)
@click.argument("remote_dir")
@click.option("--force", is_flag=True, help="Overwrite files already there.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the equivalent `modal volume put` command only.",
)
def cloud_sync(local_dir: Path, remote_dir: str, force: bool, dry_run: bool) -> None:
    """Upload LOCAL_DIR to REMOTE_DIR in the mlkit Modal volume."""
    from mlkit.cloud import sync_command_args, sync_to_volume

    if dry_run:
        click.echo(" ".join(sync_command_args(local_dir, remote_dir, force=force)))
        return
    click.echo(sync_to_volume(local_dir, remote_dir, force=force))


@cli.group(cls=_Group)
def pipeline() -> None:
    """Run the notebook pipeline (papermill)."""


@pipeline.command("run")
@click.option(
    "--profile",
    default="ci",
    show_default=True,
    help="Profile name (ci, full) or path to a profile YAML.",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("build"),
    show_default=True,
    help="Where data, manifests and models are written.",
)
@click.option(
    "--notebooks-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("notebooks"),
    show_default=True,
)
@click.option(
    "--executed-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("book/notebooks"),
    show_default=True,
    help="Where executed notebooks go (the book reads them there).",
)
@click.option(
    "--min-macro-f1",
    type=float,
    envvar="MLKIT_MIN_MACRO_F1",
    help="Deployment-gate threshold on test macro-F1; overrides the profile "
    "(environment: MLKIT_MIN_MACRO_F1).",
)
def pipeline_run(
    profile: str,
    workdir: Path,
    notebooks_dir: Path,
    executed_dir: Path,
    min_macro_f1: float | None,
) -> None:
    """Run every stage's notebook in order and write a run summary."""
    from mlkit.pipeline.runner import run_pipeline

    summary = run_pipeline(
        profile,
        workdir=workdir,
        notebooks_dir=notebooks_dir,
        executed_dir=executed_dir,
        min_macro_f1=min_macro_f1,
        progress=True,
    )
    for stage in summary["stages"]:
        click.echo(f"{stage['name']}: {stage['seconds']} s -> {stage['notebook']}")


def main() -> None:
    cli(prog_name="mlkit")


if __name__ == "__main__":  # pragma: no cover
    main()
