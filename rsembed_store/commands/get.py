"""``rsembed-store get``: one cache-first answer (computed on a miss unless --no-compute)."""

from __future__ import annotations

import sys

import click

from .common import EXIT_ALL_FAILED, emit_json
from .options import (config_from_sources, json_option, modality_option, model_option, request_from_options,
                      request_options)


@click.command()
@model_option()
@request_options()
@modality_option
@click.option("--compute/--no-compute", default=True, show_default=True,
              help="Compute and store the answer on a miss; --no-compute only looks up (exit 1 on a miss).")
@click.option("--with-grid", is_flag=True, help="Include the grid values in --json output.")
@json_option
@click.pass_obj
def get(obj, model, point, buffer_m, cell, bbox, time, year, output, pooling, sources, provider, modalities,
        compute, with_grid, as_json):
    """Get the embedding of one place and window: from the store, or computed and stored.

    \b
    Exit codes: 0 found or computed; 1 a miss with --no-compute; 2 bad input
    (or no store at --db with --no-compute); 4 the computation failed
    (e.g. no imagery in the window), nothing stored.

    \b
    Example:
      rsembed-store get -m spectral --point 11.0,46.0 --buffer-m 250 --year 2023 \\
          --source s2-l2a=./rsembed-demo/source/scenes
    """
    from ..errors import ComputeError, ProviderError
    from ..keys import resolve

    request = request_from_options(model, point, buffer_m, cell, bbox, time, year, output, pooling,
                                   provider=provider, modalities=list(modalities) or None)
    resolved = resolve(request)  # a bad request fails here, before a store is opened or created
    config = config_from_sources(sources)  # so does a --source that is not a directory
    store = obj.writable_store if compute else obj.store  # a look-up only never creates a store
    try:
        emb = store.get(resolved, compute=compute, config=config)
    except (ProviderError, ComputeError) as exc:  # the request itself failed: nothing was stored
        click.echo(f"error: the request failed: {exc}", err=True)
        sys.exit(EXIT_ALL_FAILED)
    if emb is None:
        if as_json:
            emit_json({"found": False, "key": resolved.key})
        else:
            click.echo(f"miss: {resolved.key} is not stored (--no-compute)", err=True)
        sys.exit(1)
    if as_json:
        emit_json({"found": True, **emb.to_dict(with_grid=with_grid)})
        return
    import numpy as np

    v = np.asarray(emb.vector)
    click.echo(f"key      {emb.key}")
    click.echo(f"model    {emb.model} ({emb.request.revision}), {'cached' if emb.cached else 'computed now'}")
    click.echo(f"vector   ({v.shape[0]},) {np.array2string(v[:6], precision=4)}{' ...' if v.shape[0] > 6 else ''}")
    if emb.grid is not None:
        click.echo(f"grid     {tuple(emb.grid.shape)} {emb.grid.dtype}")
    click.echo(f"compute  {emb.compute_s:.3f} s")

