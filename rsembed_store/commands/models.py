"""``rsembed-store models``: the registered models and what each declares (imports no model)."""

from __future__ import annotations

import click

from .common import emit_json
from .options import json_option


@click.command()
@json_option
def models(as_json):
    """The registered models and what each one declares."""
    from ..registry import describe_models

    infos = describe_models()
    if as_json:
        emit_json(infos)
        return
    for i in infos:
        if "error" in i:
            click.echo(f"{i['id']:<12} unavailable: {i['error']}")
            continue
        click.echo(
            f"{i['id']:<12} {i['kind']:<11} dim {i['dim']:<5} {i['metric']:<7} "
            f"outputs {','.join(i['outputs']):<12} rev {i['revision']}  {i['description']}"
        )
