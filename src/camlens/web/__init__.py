"""``camlens serve``: a web app to explain photos in a browser (needs ``camlens[web]``).

* :func:`create_app` (:mod:`camlens.web.app`): the FastAPI app, its pages and its JSON API;
* :mod:`camlens.web.engine`: the bounded work queue shared by every request, and the results;
* :mod:`camlens.web.templating`: the Jinja2 templates, shared with :mod:`camlens.study`.
"""

from camlens.web.app import create_app

__all__ = ["create_app"]
