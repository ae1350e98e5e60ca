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
def deploy() -> None:
    """Kubernetes objects of the inference service, for a gated model only."""


@deploy.command("render")
@click.option(
    "--config",
    "config_name",
    default="dev",
    show_default=True,
    help="Packaged deploy config (dev, prod) or a YAML file.",
)
@click.option(
    "--image",
    required=True,
    metavar="REPO[:TAG|@DIGEST]",
    help="The server image; without a tag or digest it is tagged "
    "<git sha>-<model sha[:12]>.",
)
@click.option(
    "--model-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The model directory the image serves (its card names the weights).",
)
@click.option(
    "--gate-file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="gate.json written by `mlkit evaluate --min-macro-f1`.",
)
@click.option(
    "--git-sha",
    help="Commit of the image, for its tag when --image has none; "
    "default: git rev-parse HEAD.",
)
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config value: dotted KEY, YAML VALUE, e.g. "
    "max_replicas=8 or resources.limits.memory=3Gi (repeatable).",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the YAML files, one per object.",
)
def deploy_render(
    config_name: str,
    image: str,
    model_dir: Path,
    gate_file: Path,
    git_sha: str | None,
    settings: tuple[str, ...],
    out_dir: Path,
) -> None:
    """Write the service's Kubernetes objects as YAML files into --out.

    Refuses, before writing anything, a model without a passing gate file.
    """
    from mlkit.deploy import (
        build_objects,
        check_gated_model,
        gated_image_tag,
        git_head,
        load_deploy_config,
        parse_image_reference,
        parse_overrides,
        write_objects,
    )

    overrides = parse_overrides(settings)
    for reserved, option in (("image", "--image"), ("model_sha256", "--model-dir")):
        if reserved in overrides:
            raise click.UsageError(f"{reserved} comes from {option}, not --set")
    model_sha256 = check_gated_model(model_dir, gate_file)
    reference = parse_image_reference(image)
    if reference["tag"] is None and reference["digest"] is None:
        git_sha = git_sha or git_head()
        if git_sha is None:
            raise click.UsageError(
                "--image has no tag and this is not a git checkout: give --git-sha"
            )
        reference["tag"] = gated_image_tag(git_sha, model_sha256)
    config = load_deploy_config(
        config_name, **overrides, image=reference, model_sha256=model_sha256
    )
    objects = build_objects(config)
    paths = write_objects(objects, out_dir)

    click.echo(f"image {config.image.reference}")
    for obj, path in zip(objects, paths, strict=True):
        click.echo(f"{obj['kind']:<24} {obj['metadata']['name']:<20} {path}")


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


@pipeline.command("evidence")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("build"),
    show_default=True,
    help="The pipeline's work directory (run summary, cards, gate).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("book/_generated"),
    show_default=True,
    help="Where the report's fragments go.",
)
@click.option(
    "--book",
    "book_dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=Path("book"),
    show_default=True,
)
@click.option(
    "--coverage-json",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("coverage.json"),
    show_default=True,
    help="Written by `make test`.",
)
@click.option(
    "--pulumi-preview",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Mock preview JSON; default: WORKDIR/infra/preview-STACK.json.",
)
@click.option("--stack", default="dev", show_default=True)
def pipeline_evidence(
    workdir: Path,
    out_dir: Path,
    book_dir: Path,
    coverage_json: Path,
    pulumi_preview: Path | None,
    stack: str,
) -> None:
    """Write the milestone report's evidence fragments from generated files."""
    from mlkit.pipeline.evidence import EvidenceSources, write_evidence

    sources = EvidenceSources(
        workdir=workdir,
        book_dir=book_dir,
        coverage_json=coverage_json,
        pulumi_preview=pulumi_preview,
        stack=stack,
    )
    for name, path in write_evidence(sources, out_dir).items():
        click.echo(f"{name}: {path}")


@cli.command("serve")
@click.option(
    "--model-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Model directory (safetensors + model card). [env MLKIT_SERVE_MODEL_DIR]",
)
@click.option("--host", help="Interface to listen on. [env MLKIT_SERVE_HOST]")
@click.option("--port", type=int, help="Port to listen on. [env MLKIT_SERVE_PORT]")
@click.option("--max-batch-size", type=int, help="Most requests per model batch.")
@click.option(
    "--max-wait-ms", type=float, help="Longest wait for a batch to fill, in ms."
)
@click.option("--max-queue", type=int, help="Requests that may wait; then 503.")
@click.option("--max-upload-bytes", type=int, help="Largest image file accepted.")
@click.option("--request-timeout-s", type=float, help="Per-request time limit.")
@click.option(
    "--drain-timeout-s", type=float, help="Longest drain after SIGTERM, in s."
)
@click.option("--model-workers", type=int, help="Batches run at once (0: one per CPU).")
@click.option(
    "--torch-threads",
    type=int,
    help="torch threads per model worker (0: the CPUs shared among the workers).",
)
@click.option("--decode-workers", type=int, help="Image decoding threads.")
@click.option(
    "--malloc-arenas", type=int, help="glibc malloc arenas (0: glibc's default)."
)
@click.option(
    "--expected-model-sha256", help="Refuse to serve weights with another sha256."
)
def serve_cmd(**flags: object) -> None:
    """Serve the model over HTTP until SIGTERM, then drain and exit.

    Every option can also be set as MLKIT_SERVE_<OPTION> in the environment
    (e.g. MLKIT_SERVE_MAX_BATCH_SIZE); a flag wins over the environment.
    """
    from mlkit.serve.config import load_serve_config
    from mlkit.serve.malloc import limit_malloc_arenas

    config = load_serve_config(flags)
    # Before torch and the server are imported, so that no thread has its
    # own arena yet.
    limit_malloc_arenas(config.malloc_arenas)
    from mlkit.serve.server import run_server

    run_server(config)


@cli.command("loadtest")
@click.argument("url")
@click.option(
    "--images",
    "image_dir",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="An image file, or a folder whose JPEG/PNG/WebP files are sent in turn.",
)
@click.option("--text", help="Description sent with every image.")
@click.option("--concurrency", type=int, help="Closed loop: requests in flight.")
@click.option("--rate", type=float, help="Open loop: requests per second (Poisson).")
@click.option(
    "--ramp",
    help="Levels over time as 'SECONDS:LEVEL,...', e.g. '0:0,60:32' "
    "(concurrency, or rate with --open).",
)
@click.option("--open", "open_loop", is_flag=True, help="Ramp levels are rates.")
@click.option("--duration", "duration_s", type=float, help="Seconds to send for.")
@click.option("--requests", "max_requests", type=int, help="Requests to send.")
@click.option("--timeout", "timeout_s", type=float, default=10.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--out",
    "out_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the summary as JSON here.",
)
@click.option(
    "--timeline",
    "timeline_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the per-second timeline as CSV here.",
)
def loadtest_cmd(
    url: str,
    image_dir: Path,
    text: str | None,
    concurrency: int | None,
    rate: float | None,
    ramp: str | None,
    open_loop: bool,
    duration_s: float | None,
    max_requests: int | None,
    timeout_s: float,
    seed: int,
    out_file: Path | None,
    timeline_file: Path | None,
) -> None:
    """Send prediction load to the service at URL and report latency.

    Closed loop with --concurrency, open loop with --rate, or a --ramp; stop
    after --duration seconds or --requests requests.
    """
    from mlkit._io import atomic_path, write_json
    from mlkit.serve.loadtest import image_payloads, parse_ramp, run_load_sync

    files = _image_files(image_dir)
    mode = "open" if rate is not None or open_loop else "closed"
    profile = {
        "mode": mode,
        "concurrency": concurrency,
        "rate": rate,
        "ramp": parse_ramp(ramp) if ramp else None,
        "duration_s": duration_s,
        "max_requests": max_requests,
        "timeout_s": timeout_s,
        "seed": seed,
    }
    profile = {k: v for k, v in profile.items() if v is not None}
    report = run_load_sync(url, profile, image_payloads(files, text))

    summary = report.to_dict()
    click.echo(
        f"{summary['requests']} requests in {summary['elapsed_s']} s: "
        f"{summary['ok']} ok ({summary['throughput_rps']} ok/s); "
        f"p50 {summary['p50_ms']} ms, p95 {summary['p95_ms']} ms, "
        f"p99 {summary['p99_ms']} ms"
    )
    if summary["errors"]:
        click.echo(f"errors: {summary['errors']}")
    if out_file is not None:
        write_json(out_file, summary)
    if timeline_file is not None:
        with atomic_path(timeline_file) as tmp:
            report.timeline().to_csv(tmp, index=False)


def _image_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    suffixes = {".jpg", ".jpeg", ".png", ".webp"}
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in suffixes)
    if not files:
        raise click.UsageError(f"no JPEG, PNG or WebP files under {path}")
    return files


def main() -> None:
    cli(prog_name="mlkit")


if __name__ == "__main__":  # pragma: no cover
    main()
