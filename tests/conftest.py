import os

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def tiny_config(tmp_path):
    """Write a config file into tmp_path and return its path; runs land in tmp_path/runs."""

    def write(text: str, name: str = "exp.yaml"):
        path = tmp_path / name
        path.write_text(text.replace("OUT", str(tmp_path / "runs")))
        return path

    return write
