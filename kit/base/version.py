"""kit's version, in one place: the package (`kit.__version__`, pyproject's dynamic version), run
records, Dask workers' check and OTLP resources read it here, so no layer imports the package's face."""

__version__ = "0.2.0"
