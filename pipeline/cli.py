"""Command-line interface: ``python -m pipeline run|validate LANDSCAPE``.

Exit codes: 0 success; 1 data or configuration error (one clear line, no traceback unless --debug);
2 usage error (unknown option, missing argument).
"""

from __future__ import annotations

import logging
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from dask.callbacks import Callback
from rasterio.errors import NotGeoreferencedWarning
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from pipeline import __version__
from pipeline.config import resolve_config_path
from pipeline.errors import PipelineError
from pipeline.summary import print_summary

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Ecosystem indicators for LandScale assessments: natural-ecosystem conversion (and, as they land, "
    "degradation, connectivity and alluvial-mining footprint) from land-cover rasters, per landscape.",
)
console = Console(stderr=True)
LANDSCAPE_HELP = (
    "Landscape name (a file configs/landscapes/NAME.yaml, e.g. lourenco) or the path of a landscape YAML file."
)
ROOT_HELP = "Project folder holding configs/ and data/ (default: the current folder)."


class _DaskProgress(Callback):
    """A rich progress bar fed by dask's local schedulers, counted in tasks.

    A stage may call dask several times (e.g. once per period); its computes share one bar whose total
    grows as each compute starts.
    """

    def __init__(self, progress: Progress, description: str) -> None:
        super().__init__()
        self.progress, self.description, self.task = progress, description, None

    def _start_state(self, dsk, state) -> None:
        new = sum(len(state[k]) for k in ("ready", "waiting", "running")) + len(state.get("finished", ()))
        if self.task is None:
            self.task = self.progress.add_task(self.description, total=max(new, 1))
        else:
            self.progress.update(self.task, total=self.progress.tasks[self.task].total + new)

    def _posttask(self, key, result, dsk, state, worker_id) -> None:
        self.progress.advance(self.task)


def _progress_factory(progress: Progress):
    @contextmanager
    def stage(description: str):
        with _DaskProgress(progress, description) as callback:
            yield
        if callback.task is not None:
            progress.update(callback.task, completed=progress.tasks[callback.task].total)

    return stage


def _fail(exc: PipelineError, debug: bool) -> None:
    if debug:
        raise exc
    console.print(Text("error: ", style="bold red") + Text(f"{type(exc).__name__}: {exc}"), highlight=False,
                  soft_wrap=True)
    raise typer.Exit(code=1)


def _config_path(landscape: str, root: Path) -> Path:
    return resolve_config_path(landscape, root)


def _setup(debug: bool) -> None:
    logging.basicConfig(level=logging.WARNING)
    warnings.simplefilter("ignore", DeprecationWarning)
    warnings.simplefilter("ignore", PendingDeprecationWarning)
    # rasterio.features.rasterize warns on its own in-memory dataset; every raster we write is georeferenced
    warnings.simplefilter("ignore", NotGeoreferencedWarning)
    warnings.showwarning = lambda message, category, *args, **kw: console.print(  # noqa: ARG005
        Text("warning: ", style="yellow") + Text(str(message)), highlight=False, soft_wrap=True)


@app.command()
def run(
    landscape: Annotated[str, typer.Argument(help=LANDSCAPE_HELP)],
    root: Annotated[Path, typer.Option(help=ROOT_HELP)] = Path("."),
    chunk_px: Annotated[int | None, typer.Option(min=16, help="Override grid.chunk_px (pixels); results do not depend on it.")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: data/processed/NAME/ under --root).")] = None,
    sensitivity: Annotated[bool, typer.Option(
        help="Run the config's sensitivity reruns (value_lo/value_hi columns); --no-sensitivity for a quicker run.")] = True,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    debug: Annotated[bool, typer.Option(help="Show full tracebacks for errors.")] = False,
) -> None:
    """Compute every configured indicator and write data/processed/NAME/ (CSV, GeoPackage, COG, manifest).

    Outputs are written atomically: a failed run leaves earlier results untouched.
    """
    from pipeline.runner import run as run_pipeline

    _setup(debug)
    try:
        config_path = _config_path(landscape, root)
        with Progress(TextColumn("{task.description:<32}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, disable=not progress, transient=False) as bar:
            result = run_pipeline(config_path, chunk_px=chunk_px, out_dir=out, progress=_progress_factory(bar),
                                  sensitivity_reruns=sensitivity)
    except PipelineError as exc:
        _fail(exc, debug)
        return
    print_summary(result, Console())


@app.command()
def validate(
    landscape: Annotated[str, typer.Argument(help=LANDSCAPE_HELP)],
    root: Annotated[Path, typer.Option(help=ROOT_HELP)] = Path("."),
    debug: Annotated[bool, typer.Option(help="Show full tracebacks for errors.")] = False,
) -> None:
    """Check the config, legend and inputs without computing indicators.

    Checks: YAML keys and values; legend; files exist and open; CRS present; the boundary overlaps the land
    cover; every configured year has a band or file; every code inside the boundary is in the legend.
    """
    from pipeline.prepare import validate as validate_inputs

    _setup(debug)
    try:
        prep = validate_inputs(_config_path(landscape, root))
    except PipelineError as exc:
        _fail(exc, debug)
        return
    grid = prep.grid
    if prep.landcover_missing:
        console.print(Text("warning: ", style="yellow") + Text(prep.landcover_missing + "; only the mining footprint can run"),
                      soft_wrap=True)
    console.print(
        f"[green]ok[/] {prep.config.name}: {len(prep.config.years)} years {prep.config.years}, legend "
        f"{prep.legend.name}, grid {grid.shape[1]}x{grid.shape[0]} px of {grid.resolution_m:g} m "
        f"({grid.crs.to_string()[:70]}), zone layers: {', '.join(z.name for z in prep.zones)}",
        highlight=False, soft_wrap=True,
    )


@app.command()
def fetch(
    landscape: Annotated[str, typer.Argument(help=LANDSCAPE_HELP)],
    root: Annotated[Path, typer.Option(help=ROOT_HELP)] = Path("."),
    year: Annotated[list[int] | None, typer.Option(help="Fetch only this year (repeatable); default: every configured year.")] = None,
    force: Annotated[bool, typer.Option(help="Fetch again even when the files exist.")] = False,
    if_missing: Annotated[bool, typer.Option(help="Only when Earth Engine land cover is missing, and without credentials "
                                             "just warn (used by `make run`).")] = False,
    summaries_only: Annotated[bool, typer.Option(help="Download nothing: compute per-zone class-transition areas on Earth "
                                                 "Engine and write data/processed/NAME/landcover_summaries_ee.csv.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    debug: Annotated[bool, typer.Option(help="Show full tracebacks for errors.")] = False,
) -> None:
    """Download the land cover of LANDSCAPE from Google Earth Engine into data/raw/NAME/.

    The product (configs/products/), the Cloud project and an optional adjacency ring come from landcover.fetch
    in the landscape config. Each year is fetched tile by tile on the landscape grid (no resampling later),
    with retries on quota errors, resumes where a broken fetch stopped, and is written atomically as
    landcover.path; fetch_manifest.json beside it records assets, versions, dates and checksums.
    Credentials: `earthengine authenticate`, or GOOGLE_APPLICATION_CREDENTIALS for a service account;
    project: landcover.fetch.project or EARTHENGINE_PROJECT.
    """
    from pipeline import fetch as fetch_stage

    _setup(debug)
    try:
        config_path = _config_path(landscape, root)
        if if_missing:
            note = fetch_stage.fetch_if_missing(config_path, progress=progress)
            if note:
                console.print(Text("warning: ", style="yellow") + Text(note), highlight=False, soft_wrap=True)
            return
        if summaries_only:
            from pipeline.ee_summaries import summaries

            path = summaries(config_path)
            console.print(f"[green]ok[/] engine-side areas written to {path}", highlight=False, soft_wrap=True)
            return
        manifest = fetch_stage.fetch(config_path, years=year or None, force=force, progress=progress)
    except PipelineError as exc:
        _fail(exc, debug)
        return
    files = [rec["file"] for layer in manifest.get("layers", {}).values() for rec in layer.get("years", {}).values()]
    console.print(f"[green]ok[/] {len(files)} file(s) on disk; manifest "
                  f"{Path(files[0]).parent / fetch_stage.MANIFEST_NAME if files else '(nothing fetched)'}",
                  highlight=False, soft_wrap=True)


@app.command()
def compare(
    run_a: Annotated[Path, typer.Argument(help="Output folder of the earlier run (baseline assessment), e.g. a copy of data/processed/lourenco.")],
    run_b: Annotated[Path, typer.Argument(help="Output folder of the later run (reassessment).")],
    out: Annotated[Path | None, typer.Option(help="Folder for compare.csv and inputs_changed.csv (default: data/processed/compare_A_vs_B/).")] = None,
    debug: Annotated[bool, typer.Option(help="Show full tracebacks for errors.")] = False,
) -> None:
    """Compare two runs: every metric from run A to run B (change, %, better/worse/stable) and every input
    whose content, product, legend, grid or parameters changed between them.

    A metric that moved with its data source is not a change on the ground: each row of compare.csv lists the
    changed inputs that can move it (column inputs_changed).
    """
    from pipeline.compare import write_comparison

    _setup(debug)
    out = out or Path("data/processed") / f"compare_{run_a.resolve().name}_vs_{run_b.resolve().name}"
    try:
        table, changes = write_comparison(run_a, run_b, out)
    except PipelineError as exc:
        _fail(exc, debug)
        return
    if changes.empty:
        console.print("[green]no input changed[/]: every difference comes from the computation itself", highlight=False)
    else:
        console.print(f"[yellow]{len(changes)} input change(s)[/]: numbers that depend on them may have moved with the data, "
                      "not on the ground", highlight=False)
        for row in changes.itertuples():
            console.print(f"  {row.input}: {row.change} ({row.detail})", highlight=False, soft_wrap=True)
    counts = table["direction"].value_counts()
    console.print(f"{len(table)} rows: " + ", ".join(f"{k or 'one run only'} {v}" for k, v in counts.items())
                  + f" -> {out / 'compare.csv'}", highlight=False, soft_wrap=True)


@app.command()
def report(
    landscape: Annotated[str, typer.Argument(help=LANDSCAPE_HELP)],
    root: Annotated[Path, typer.Option(help=ROOT_HELP)] = Path("."),
    run_dir: Annotated[Path | None, typer.Option(help="Output folder of the run (default: data/processed/NAME/ under --root).")] = None,
    debug: Annotated[bool, typer.Option(help="Show full tracebacks for errors.")] = False,
) -> None:
    """Write the assessment report of a run: RUN/report/report.html and report.md with a map, a chart, the
    headline numbers and a method-and-limitations paragraph per indicator (PNG files beside them).
    """
    from pipeline.report import build_report

    _setup(debug)
    try:
        config_path = _config_path(landscape, root)
        path = build_report(config_path, run_dir=run_dir)
    except PipelineError as exc:
        _fail(exc, debug)
        return
    console.print(f"[green]ok[/] report: {path} (and {path.with_suffix('.md').name})", highlight=False)


@app.command()
def version() -> None:
    """Print the pipeline version."""
    typer.echo(__version__)


def main() -> None:
    """Entry point: typer exits 2 on usage errors by itself."""
    app(prog_name="python -m pipeline")


if __name__ == "__main__":
    sys.exit(main())
