"""The offline web map served by ``rsembed-store serve`` at ``/`` and ``/ui`` (docs/viewer.md).

The page (``static/index.html``, ``viewer.js``, ``viewer.css``) draws each stored
cell of a space and window as its H3 hexagon coloured by the first three
principal components of the vectors (:mod:`.picture`), and calls the same HTTP
API that scripts use: ``/search`` for click-to-search and search by examples,
``/change`` for the change layer. Its libraries (deck.gl, h3-js and
apache-arrow) and Swagger UI for ``/docs`` are vendored under
``static/vendor/`` by ``scripts/vendor_viewer_assets.sh``, so nothing is
fetched from the internet. :mod:`.routes` adds the routes to the service.
"""

from .picture import Picture, Pictures, parent_cells
from .routes import add

__all__ = ["Picture", "Pictures", "add", "parent_cells"]
