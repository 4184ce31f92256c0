"""``rsembed-store demo``: ingest a synthetic scene (or, with ``--real``, the real Landsat scenes
Debian ships), show the cache, search and SQL at work."""

from __future__ import annotations

import click

from .common import emit_json
from .options import json_option


@click.command()
@click.option("--workdir", default="./rsembed-demo", show_default=True,
              help="Where the synthetic source and the map are written (the source is reused when present).")
@click.option("--h3-res", type=int, default=9, show_default=True, help="H3 resolution of the cells ingested.")
@click.option("--size-px", type=int, default=1024, show_default=True, help="Side of the synthetic scene in pixels.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the synthetic scene.")
@click.option("-k", type=int, default=10, show_default=True, help="Neighbours per search.")
@click.option("--real", is_flag=True, default=False,
              help="Use the real Landsat 7 (2001) and Landsat 8 (2013) scenes of Debian's r-cran-satellite "
                   "package (fetched once with apt-get into ~/.cache/rsembed-store/testdata) instead of a "
                   "synthetic scene; ingests both years at H3 resolution 10, searches from the most vegetated "
                   "cell and finds the cells that changed most (--workdir, --h3-res, --size-px and --seed "
                   "apply to the synthetic demo only).")
@json_option
@click.pass_obj
def demo(obj, workdir, h3_res, size_px, seed, k, real, as_json):
    """Generate a synthetic scene, ingest it with the built-in featurisers, search it and query it.

    Runs offline in about 32 s on a quiet 2-core machine (49 s of CPU; most of it warping the
    scene's COGs for each cell, once per model). It prints what it did and where the store and
    the PNG map are.
    """
    from ..demo import run_demo

    log = (lambda *_: None) if as_json else click.echo
    if real:
        from ..demo_real import run_real_demo

        report = run_real_demo(obj.writable_store, k=min(k, 10), progress=False if as_json else None, log=log)
        if as_json:
            emit_json(report)
        return
    report = run_demo(obj.writable_store, workdir, h3_res=h3_res, size_px=size_px, seed=seed, k=k,
                      progress=False if as_json else None, log=log)
    if as_json:
        emit_json(report)
