"""Files ftflow reads at run time that live outside Python modules, found through the installed package.

The top-level `expectations/`, `prefect.yaml` and `data/*` files of the repository are the
source of truth; `ftflow/bundled/` links to them, and building the wheel copies them in as
package data. So a source checkout, an editable install and a plain wheel all read the same
files through `importlib.resources`, never relative to a source tree.
"""

from __future__ import annotations

from importlib import resources
from importlib.abc import Traversable


def resource(name: str) -> Traversable:
    """A bundled file by its repository path, e.g. `expectations/examples.json` or `prefect.yaml`."""
    return resources.files("ftflow").joinpath("bundled", *name.split("/"))


def resource_text(name: str) -> str:
    return resource(name).read_text("utf-8")
