"""Dataset formats: one module per on-disk (or generated) format, each registering its source.

Every module in this package is imported when the package is, so adding a
format is one new file here with one ``@register_source`` function (see
ARCHITECTURE.md); nothing else lists the formats.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
