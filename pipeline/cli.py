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

import pandas as pd
import typer
from dask.callbacks import Callback
from rasterio.errors import NotGeoreferencedWarning
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from pipeline import __version__
from pipeline.config import resolve_config_path
from pipeline.errors import PipelineError

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
            result = run_pipeline(config_path, chunk_px=chunk_px, out_dir=out, progress=_progress_factory(bar))
    except PipelineError as exc:
        _fail(exc, debug)
        return
    _print_summary(result)


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
    from pipeline.runner import validate as validate_inputs

    _setup(debug)
    try:
        prep = validate_inputs(_config_path(landscape, root))
    except PipelineError as exc:
        _fail(exc, debug)
        return
    grid = prep.grid
    console.print(
        f"[green]ok[/] {prep.config.name}: {len(prep.config.years)} years {prep.config.years}, legend "
        f"{prep.legend.name}, grid {grid.shape[1]}x{grid.shape[0]} px of {grid.resolution_m:g} m "
        f"({grid.crs.to_string()[:70]}), zone layers: {', '.join(z.name for z in prep.zones)}",
        highlight=False, soft_wrap=True,
    )


@app.command()
def version() -> None:
    """Print the pipeline version."""
    typer.echo(__version__)


def _print_summary(result) -> None:
    table = result.results.get("conversion")
    out = Console()
    name = result.prepared.config.name
    out.print(f"\n[bold]{result.prepared.config.title or name}[/]  ->  {result.files[0].parent}", highlight=False)
    if table is not None:
        t = table.table
        land = t[(t["zone_layer"] == "landscape") & (t["ecosystem"] == "all_natural") & t["class_to"].isna() & t["class_from"].isna()]
        extent = land[land["metric"] == "natural_extent_ha"].set_index("year")["value"]
        area = t[(t["zone_layer"] == "landscape") & (t["metric"] == "landscape_area_ha")]["value"].iloc[0]
        out.print(f"Landscape area inside the boundary: {area:,.1f} ha", highlight=False)
        years = Table(title="Natural extent", title_justify="left")
        years.add_column("year")
        years.add_column("natural ha", justify="right")
        years.add_column("% of landscape", justify="right")
        for year, value in extent.items():
            years.add_row(str(year), f"{value:,.1f}", f"{100 * value / area:.2f}")
        out.print(years)
        periods = Table(title="Natural-ecosystem conversion per period", title_justify="left")
        for col in ("period", "converted ha", "converted %", "gain ha", "net change ha", "rate %/yr"):
            periods.add_column(col, justify="right")
        per = land[land["year_from"].notna()]
        wide = per.pivot_table(index=["year_from", "year_to"], columns="metric", values="value", aggfunc="first")
        order = [p for p in result.prepared.config.periods() if p in wide.index]
        for (ya, yb), row in wide.loc[order].iterrows():
            periods.add_row(f"{ya}-{yb}", f"{row.get('converted_ha', 0):,.1f}", _fmt(row.get("converted_pct"), ".3f"),
                            f"{row.get('gain_ha', 0):,.1f}", f"{row.get('net_change_ha', 0):+,.1f}",
                            _fmt(row.get("annual_rate_pct"), "+.4f"))
        out.print(periods)
        cutoff = land[land["metric"].isin(["converted_since_cutoff_ha", "converted_since_cutoff_pct"])]
        if not cutoff.empty:
            values = cutoff.set_index("metric")["value"]
            ya, yb = int(cutoff["year_from"].iloc[0]), int(cutoff["year_to"].iloc[0])
            out.print(f"Conversion since the {ya} cut-off (to {yb}): {values['converted_since_cutoff_ha']:,.1f} ha "
                      f"({_fmt(values.get('converted_since_cutoff_pct'), '.3f')} % of the {ya} natural extent)",
                      highlight=False)
    check = result.manifest["area_check"]
    out.print(f"Area check: grid {check['grid_inside_ha']:,.1f} ha vs geodesic {check['boundary_geodesic_ha']:,.1f} ha "
              f"({check['difference_pct']:+.4f} %, tolerance {check['tolerance_ha']:,.1f} ha). "
              f"Files: {', '.join(p.name for p in result.files)}", highlight=False)


def _fmt(value, spec: str) -> str:
    return "" if value is None or pd.isna(value) else format(value, spec)


def main() -> None:
    """Entry point: typer exits 2 on usage errors by itself."""
    app(prog_name="python -m pipeline")


if __name__ == "__main__":
    sys.exit(main())
