def pytest_configure(config):
    # pycocotools' Cython masks predate NumPy 2's __array__(copy=...) protocol; harmless.
    config.addinivalue_line(
        "filterwarnings", "ignore:__array__ implementation doesn't accept a copy keyword")
