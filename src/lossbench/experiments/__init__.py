"""Sweeps over grids of configs, and the reports that compare their cells."""
