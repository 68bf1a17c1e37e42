"""The engine tests' tiny recipe and shared tiny synthetic dataset."""

from ..engine.conftest import tiny_data_root  # noqa: F401
