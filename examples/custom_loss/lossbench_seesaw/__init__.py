"""An example lossbench plugin: the seesaw loss, registered as ``seesaw`` when :mod:`lossbench_seesaw.seesaw`
is imported (by the entry point in pyproject.toml, or by a config's ``plugins:``)."""
