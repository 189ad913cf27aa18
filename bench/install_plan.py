"""What `make gpu-install` asks pip for, read from pyproject.toml: the requirements of the chosen extras,
never the CPU stand-ins for TensorRT, never two distributions that write the same package folder.

A GPU machine keeps its own torch, TensorRT and CUDA packages: the install is a venv over them
(`venv --system-site-packages`), this package editable with `--no-deps`, then `pip install -r` of this plan
(pip leaves requirements the machine already satisfies alone). Two families of wheels share one folder:

    tensorrt_bindings   the real `tensorrt` wheel brings its own (tensorrt-cu12/cu13-bindings of its version);
                        the `trt-cpu` extra's tensorrt-cu13-bindings >= 11 would replace it or force TensorRT 11
    onnxruntime         onnxruntime (CPU) and onnxruntime-gpu: the plan drops onnxruntime when it has the GPU one,
                        and what requires the CPU one (onnxruntime-genai: onnxruntime>=1.31; its test then skips)

    python -m mixtral_trt.bench.install_plan gpu dev     # prints the requirement lines; exit 1 on a conflict
"""

from __future__ import annotations

import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from mixtral_trt.common.errors import MixtralTrtError

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
CPU_STANDINS = "trt-cpu"  # the extra that only CPU test installs take
# import folder -> the distributions that write it (at most one may be installed)
SAME_FOLDER = {
    "tensorrt_bindings": ("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt-cu12-bindings",
                          "tensorrt-cu13-bindings"),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
}
# distributions that require the CPU `onnxruntime` distribution (read from their wheels' metadata)
NEEDS_CPU_ONNXRUNTIME = ("onnxruntime", "onnxruntime-genai")


def _project(pyproject: Path) -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        from pip._vendor import tomli as tomllib
    return tomllib.loads(Path(pyproject).read_text())["project"]


def requirements(extras: tuple[str, ...], pyproject: Path = PYPROJECT) -> list[Requirement]:
    """The base requirements plus those of `extras`, self-references (`mixtral-trt[serve]`) expanded."""
    project = _project(pyproject)
    name, optional = canonicalize_name(project["name"]), project.get("optional-dependencies", {})
    out, seen, todo = [Requirement(r) for r in project.get("dependencies", [])], set(), list(extras)
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        if extra not in optional:
            raise MixtralTrtError(f"{pyproject}: no extra {extra!r} (extras: {', '.join(optional)})")
        seen.add(extra)
        for line in optional[extra]:
            req = Requirement(line)
            if canonicalize_name(req.name) == name:
                todo.extend(req.extras)
            else:
                out.append(req)
    return out


def folder_conflicts(reqs: list[Requirement]) -> list[str]:
    """Each import folder that two requested distributions would write (a real `tensorrt` counts as its bindings)."""
    names = {canonicalize_name(r.name) for r in reqs}
    problems = []
    for folder, dists in SAME_FOLDER.items():
        clash = sorted(names & {canonicalize_name(d) for d in dists})
        if len(clash) > 1:
            problems.append(f"{' and '.join(clash)} all install the `{folder}` folder")
    return problems


def gpu_plan(extras: tuple[str, ...] = ("gpu", "dev"), pyproject: Path = PYPROJECT) -> list[Requirement]:
    """The requirements a GPU install passes to pip: onnxruntime-gpu in place of onnxruntime, no CPU stand-ins."""
    if CPU_STANDINS in extras:
        raise MixtralTrtError(f"the {CPU_STANDINS!r} extra holds CPU stand-ins for TensorRT; a GPU install never "
                              "takes it")
    reqs = requirements(extras, pyproject)
    standins = {canonicalize_name(r.name) for r in requirements((CPU_STANDINS,), pyproject)}
    standins -= {canonicalize_name(r.name) for r in requirements((), pyproject)}
    leaked = sorted(standins & {canonicalize_name(r.name) for r in reqs})
    if leaked:
        raise MixtralTrtError(f"{pyproject}: extras {', '.join(extras)} pull the CPU stand-in(s) {', '.join(leaked)}")
    if any(canonicalize_name(r.name) == "onnxruntime-gpu" for r in reqs):
        reqs = [r for r in reqs if canonicalize_name(r.name) not in NEEDS_CPU_ONNXRUNTIME]
    problems = folder_conflicts(reqs)
    if problems:
        raise MixtralTrtError(f"{pyproject}: extras {', '.join(extras)}: {'; '.join(problems)}")
    return reqs


def main(argv: list[str]) -> int:
    try:
        plan = gpu_plan(tuple(argv) or ("gpu", "dev"))
    except MixtralTrtError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print("\n".join(str(r) for r in plan))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
