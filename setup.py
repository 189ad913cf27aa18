"""Package discovery for the `mixtral_trt` namespace (metadata lives in pyproject.toml).

The four top-level folders install as `mixtral_trt.<folder>`; their sub-packages are found here so the
list never goes stale.
"""

from setuptools import find_packages, setup

TOP_LEVEL = ("mixtral_ref", "exporter", "runtime", "plugins")

setup(
    packages=[
        f"mixtral_trt.{name}"
        for top in TOP_LEVEL
        for name in [top, *(f"{top}.{sub}" for sub in find_packages(top))]
    ],
)
