"""Tests use paths relative to the project root (tests/data/..., configs/...): run them from there."""

import os
from pathlib import Path

os.chdir(Path(__file__).resolve().parent.parent)
