"""The `mixtral_trt` namespace of a plain checkout, for machines where nothing is installed: with
`PYTHONPATH=<checkout>/tools/pythonpath`, `mixtral_trt.<folder>` is `<checkout>/<folder>`, which is what
setup.py's package_dir maps on install. Used by `make device-check` and ../../device_check.py."""

from pathlib import Path

__path__ = [str(Path(__file__).resolve().parents[3])]  # noqa: F811  (the checkout's folders are the sub-packages)
