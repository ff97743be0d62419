"""Integration: peers' suites, real services (moto S3, HTTP, dask) and other tools' venvs."""
