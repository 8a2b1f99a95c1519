"""Sphinx configuration of the lossbench documentation site (``make docs``).

Offline by design: no intersphinx inventories are fetched, and references to
other projects' objects (torch, pydantic, the standard library) are left as
plain text instead of links (``nitpick_ignore_regex``); every reference to
lossbench itself must resolve, since the build runs with ``-n -W``.
"""

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent / "src"))  # document this checkout, whatever is installed
sys.path.insert(0, str(DOCS / "_ext"))

from lossbench import __version__  # noqa: E402

project = "lossbench"
author = "the lossbench developers"
copyright = "2026, the lossbench developers"
release = version = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinxarg.ext",
    "lossbench_docgen",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "examples/*.md"]
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3

# Google-style docstrings; the loss docstrings' own sections (lossbench_docgen.LOSS_SECTIONS)
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_custom_sections = ["Formula", "Paper", "Official code", "Checked by", "Layout"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"

# Nitpicky, but only about lossbench: other projects' names stay plain text (no inventories offline).
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(torch|numpy|np|nn|pydantic|PIL|pathlib|collections|typing|argparse|os)(\..*)?"),
    (r"py:.*", r"(Path|Any|Callable|Sequence|Iterator|Iterable|Mapping|Literal|T|Tensor|Module|Image|"
               r"BaseModel|Namespace|ArgumentParser)"),
    (r"py:class", r"(int|float|str|bool|dict|list|tuple|object|None|bytes|type)"),
]

html_theme = "furo"
html_title = f"lossbench {version}"
html_static_path = []
smartquotes = False  # keep "--set" and quotes as written
