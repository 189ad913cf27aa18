"""Package layout of the `mixtral_trt` namespace (metadata lives in pyproject.toml).

Each top-level folder installs as `mixtral_trt.<folder>` (docs/ARCHITECTURE.md, "Layout"); sub-packages are
found here so the list never goes stale.
"""

from setuptools import find_packages, setup

TOP_LEVEL = ("common", "chat", "mixtral_ref", "exporter", "plugins", "runtime", "parity", "serve", "bench", "cli")

setup(
    package_dir={f"mixtral_trt.{top}": top for top in TOP_LEVEL},
    packages=[
        f"mixtral_trt.{name}"
        for top in TOP_LEVEL
        for name in [top, *(f"{top}.{sub}" for sub in find_packages(top))]
    ],
)
