"""``rsembed-store view``: serve the store and open the web map (docs/viewer.md) in a browser."""

from __future__ import annotations

import threading

import click

from .serve import serve


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind (loopback by default).")
@click.option("--port", type=int, default=8765, show_default=True, help="TCP port.")
@click.option("--no-browser", is_flag=True, help="Print the map's URL instead of opening a browser.")
@click.pass_context
def view(ctx, host, port, no_browser):
    """Serve the store over HTTP (as `serve` does) and open its map at http://HOST:PORT/.

    \b
    Examples:
      rsembed-store view
      rsembed-store view --port 9000 --no-browser
      RSEMBED_STORE_BASEMAP='https://tile.example/{z}/{x}/{y}.png' rsembed-store view
    """
    url = f"http://{host}:{port}/"
    click.echo(f"the map: {url}", err=True)
    if not no_browser:
        import webbrowser

        # after a moment, so the server is listening when the browser asks
        threading.Timer(1.5, webbrowser.open, args=(url,)).start()
    ctx.invoke(serve, host=host, port=port)
