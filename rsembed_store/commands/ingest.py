"""``rsembed-store ingest``: cover a region with H3 cells, cross with windows, compute what is missing."""

from __future__ import annotations

import json
import os
import sys

import click

from .common import EXIT_ALL_FAILED, EXIT_SOME_FAILED, emit_json, json_option
from ..errors import SpecError
from ..specs import BBox, OutputSpec, TemporalSpec, parse_time


def parse_bbox(text: str) -> BBox:
    parts = [p for p in text.replace(" ", ",").split(",") if p]
    if len(parts) != 4:
        raise SpecError(f"--bbox {text!r} is not accepted; use MINLON,MINLAT,MAXLON,MAXLAT")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise SpecError(f"--bbox {text!r} has a value that is not a number; use MINLON,MINLAT,MAXLON,MAXLAT") from None
    return BBox(*values)


def parse_sources(values) -> dict:
    """``--source NAME=DIR`` items as ``{name: dir}``; each DIR must be an existing directory,
    checked here so that a typo is reported at once, not once per request after planning."""
    sources = {}
    for item in values:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise SpecError(f"--source {item!r} is not accepted; use NAME=DIR, e.g. s2-l2a=./scenes")
        if not os.path.isdir(os.path.expanduser(path)):
            what = "is not a directory" if os.path.exists(os.path.expanduser(path)) else "does not exist"
            raise SpecError(f"--source {item!r}: {path!r} {what}; give the directory that holds the "
                            f"{name!r} scenes, as NAME=DIR")
        sources[name] = path
    return sources


def read_cells(path: str) -> list:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        data = json.loads(text)
        if isinstance(data, list):
            return data
    except json.JSONDecodeError:
        pass
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def windows_from(times, years) -> list:
    windows = [parse_time(t) for t in times] + [TemporalSpec.year(int(y)) for y in years]
    if not windows:
        raise SpecError("give at least one time window: --time START/END or --year Y")
    return windows


@click.command()
@click.option("--model", "-m", required=True, help="Model id (see `rsembed-store models`).")
@click.option("--bbox", help="Region as MINLON,MINLAT,MAXLON,MAXLAT.")
@click.option("--region", "region_file", type=click.Path(exists=True, dir_okay=False),
              help="Region as a GeoJSON Polygon/MultiPolygon file.")
@click.option("--cells", "cells_file", type=click.Path(exists=True, dir_okay=False),
              help="H3 cells: a JSON list or one cell per line.")
@click.option("--h3-res", type=int, default=9, show_default=True, help="H3 resolution of the cells.")
@click.option("--time", "times", multiple=True, help="Half-open window START/END (ISO dates); repeatable.")
@click.option("--year", "years", multiple=True, type=int, help="A calendar year; repeatable.")
@click.option("--output", type=click.Choice(["pooled", "grid"]), default="pooled", show_default=True)
@click.option("--pooling", type=click.Choice(["mean", "max"]), default="mean", show_default=True)
@click.option("--source", "sources", multiple=True, help="Imagery source NAME=DIR for the local provider; repeatable.")
@click.option("--provider", help="Where pixels come from (e.g. local, gee; gse: cog, gee); default: the model's first. "
              "'auto': per request, the first that can serve it (docs/rs-embed-users.md).")
@click.option("--modality", "modalities", multiple=True,
              help="An extra sensor the model takes beside its own, e.g. s1 (see docs/timeseries.md); repeatable.")
@click.option("--workers", type=click.IntRange(min=1), default=4, show_default=True, help="Concurrent fetches.")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True,
              help="Requests looked up in the store at once.")
@click.option("--flush-seconds", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Write what is computed at least this often: the most work a crash (kill -9) can lose "
                   "[default: 10]. 'inf' writes by count only.")
@click.option("--write-batch", type=click.IntRange(min=1), default=None,
              help="Write once this many answers are held, whatever the time [default: 2048].")
@click.option("--allow-failures", is_flag=True,
              help="Exit 0 even when some or all requests failed (they are still reported).")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Where the work runs: threads in this process, or Ray tasks (extra `ray`).")
@click.option("--ray-address", help="Ray cluster to join ('auto', 'ray://HOST:PORT'); default: start a local Ray.")
@click.option("--ray-num-cpus", type=int, help="Cores of the local Ray (default: all of this machine's).")
@click.option("--partition-size", type=int, help="Most requests per Ray task (default 512, less for small plans).")
@click.option("--dry-run", is_flag=True, help="Plan only: count requests and cache hits, compute nothing.")
@click.option("--save-plan", type=click.Path(dir_okay=False), help="Write the plan (JSON) to this file.")
@json_option
@click.pass_obj
def ingest(obj, model, bbox, region_file, cells_file, h3_res, times, years, output, pooling, sources, provider,
           modalities, workers, batch_size, flush_seconds, write_batch, allow_failures, executor, ray_address,
           ray_num_cpus, partition_size, dry_run, save_plan, as_json):
    """Compute embeddings for every H3 cell of a region and every window, cache-first.

    Cells are those whose centres lie inside the region. Already stored answers
    are not recomputed; failures are reported and never stored. What is
    computed is written at least every --flush-seconds, so a crash loses
    seconds and a rerun computes only what is missing. With `--executor ray`
    the misses run as Ray tasks that write their own answers (see
    docs/scale-out.md).

    \b
    Exit codes:
      0  every request is stored (cached or computed), or --allow-failures
      2  bad input or options (nothing computed), or an error
      3  some requests failed; the others are stored
      4  every request that had to be computed failed (e.g. no imagery)

    \b
    Example:
      rsembed-store ingest -m spectral --bbox 10.95,45.95,11.05,46.05 --h3-res 9 \\
          --year 2023 --source s2-l2a=./rsembed-demo/scenes
      rsembed-store --db s3://bucket/store ingest ... --executor ray --ray-address auto
    """
    from ..errors import NoStoreError
    from ..ingest.engine import ingest as run_ingest
    from ..ingest.plan import plan
    from ..ingest.ray_executor import executor_for

    # every option is checked before planning, which can take long for a large region
    runner = executor_for(executor, ray_address=ray_address, ray_num_cpus=ray_num_cpus, partition_size=partition_size)
    chosen = [x for x in (bbox, region_file, cells_file) if x]
    if len(chosen) != 1:
        raise SpecError("give exactly one region: --bbox, --region or --cells")
    if bbox:
        region = parse_bbox(bbox)
    elif region_file:
        region = region_file
    else:
        region = read_cells(cells_file)
    out = OutputSpec.grid() if output == "grid" else OutputSpec.pooled(pooling)
    windows = windows_from(times, years)
    config = {"sources": parse_sources(sources)} if sources else {}
    auto = isinstance(provider, str) and provider.strip().lower() == "auto"
    provider = None if auto else provider
    check_model_options(model, provider, out, list(modalities) or None, config, dry_run or auto)

    the_plan = plan(model, region, h3_res, windows, output=out, provider=provider,
                    modalities=list(modalities) or None, limits=obj.limits)
    routing = route_auto(obj, the_plan, config, dry_run) if auto else None
    if dry_run:
        try:
            the_plan.check_cache(obj.store)  # a dry run only reads: it creates no store
        except NoStoreError:
            the_plan.is_cached, the_plan.cached = [False] * len(the_plan.requests), 0
            if not as_json:
                click.echo(f"note: no store at {obj.db!r} yet: every request is to compute", err=True)
    else:
        the_plan.check_cache(obj.writable_store)
    if save_plan:
        the_plan.save(save_plan)
    if dry_run:
        summary = plan_summary(the_plan, routing)
        if as_json:
            emit_json({"plan": summary})
        else:
            click.echo(
                f"plan: {summary['n_requests']} requests ({summary['n_cells']} cells x {summary['n_windows']} windows), "
                f"{summary['cached']} cached, {summary['to_compute']} to compute, "
                f"~{summary['estimated_seconds']:.0f} s estimated"
            )
            if routing is not None:
                click.echo("providers: " + ", ".join(f"{name} {v['requests']} ({v['to_compute']} to compute)"
                                                     for name, v in summary["providers"].items())
                           + f"; ~{summary['earth_engine_calls']} Earth Engine calls")
        return
    try:
        result = run_ingest(obj.writable_store, the_plan.requests, config, progress=None if not as_json else False,
                            fetch_workers=workers, batch_size=batch_size, write_batch=write_batch,
                            flush_seconds=flush_seconds, executor=runner)
    finally:
        if hasattr(runner, "close"):  # a local Ray started for this command stops with it
            runner.close()
    if as_json:
        emit_json({"plan": plan_summary(the_plan, routing), "summary": result.to_dict()})
    else:
        click.echo(result.line())
        for f in result.failures[:10]:
            click.echo(f"  failed {f.key[:12]}: {f.reason}", err=True)
        if result.failed > 10:
            click.echo(f"  ... and {result.failed - 10} more failures (use --json to see them)", err=True)
    code = exit_code(result)
    if code and not allow_failures:
        if not as_json:  # with --json the summary says it
            what = "every request to compute" if code == EXIT_ALL_FAILED else "some requests"
            click.echo(f"error: {what} failed ({result.failed} of {result.requested}); exit {code} "
                       "(--allow-failures exits 0)", err=True)
        sys.exit(code)


def route_auto(obj, the_plan, config: dict, dry_run: bool):
    """``--provider auto``: a provider per planned request (rsembed_store.compat.auto.route),
    a stored answer of any provider counting as a hit unless $RSEMBED_STORE_STRICT_PROVIDER."""
    from ..compat.auto import route
    from ..compat.routing import strict_default
    from ..errors import NoStoreError

    try:
        store = obj.store if dry_run else obj.writable_store
    except NoStoreError:
        store = None
    full = {**((store.config or {}) if store is not None else {}), **config}
    routing = route(the_plan.requests, full, store=store, strict=strict_default())
    the_plan.requests = routing.requests
    return routing


def plan_summary(the_plan, routing) -> dict:
    """The plan's summary; under ``--provider auto`` also the requests per provider and the
    expected Earth Engine calls."""
    summary = the_plan.summary()
    if routing is not None:
        summary["providers"] = routing.providers(the_plan.is_cached)
        summary["earth_engine_calls"] = routing.earth_engine_calls(the_plan.is_cached)
        summary["stored_by_another_provider"] = routing.stored_elsewhere
    return summary


def exit_code(summary) -> int:
    """0 when nothing failed; 4 when every request that had to be computed failed; else 3."""
    if not summary.failed:
        return 0
    return EXIT_ALL_FAILED if summary.computed == 0 else EXIT_SOME_FAILED


def check_model_options(model: str, provider, output, modalities, config: dict, dry_run: bool) -> None:
    """What can be checked without a plan: the model, its provider, output and modalities, and,
    for the local provider, that a source is given for the collection the model reads."""
    from ..registry import model_class

    cls = model_class(model)  # UnknownModelError names the registered models
    chosen = cls.resolve_provider(provider)
    cls.resolve_output(output)
    cls.resolve_modalities(modalities, None)
    sensor = cls.info.default_sensor
    if dry_run or chosen != "local" or sensor is None:
        return
    from ..ingest.providers.local import ENV_SOURCES

    given = dict(config.get("sources") or {})
    from_env = {part.partition("=")[0].strip() for part in os.environ.get(ENV_SOURCES, "").split(",") if "=" in part}
    if sensor.collection not in given and sensor.collection not in from_env:
        raise SpecError(
            f"model {model!r} reads collection {sensor.collection!r} through the local provider, and no source "
            f"is given for it (given: {sorted(given)}); add --source {sensor.collection}=DIR "
            f"(or set {ENV_SOURCES}={sensor.collection}=DIR)"
        )
