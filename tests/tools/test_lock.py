"""tools/lock.py: parsing, diffs, adoption only after a passing suite; the committed lock against pyproject.toml's
ranges; the venv the tests run in against the lock it was installed from."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("lock_tool", ROOT / "tools" / "lock.py")
lock = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lock)

PASSED_LOG = "....\n===== 950 passed, 9 skipped in 700.12s (0:11:40) =====\n"
FAILED_LOG = "..F.\nFAILED tests/x.py::test_y\n1 failed, 953 passed, 9 skipped in 701.00s\n"


def test_parse_normalizes_names_and_refuses_ranges():
    assert lock.parse("# c\nml_dtypes==0.7.0\nPyYAML==6.0.4  # why\n\n") == {"ml-dtypes": "0.7.0", "pyyaml": "6.0.4"}
    with pytest.raises(ValueError, match="exact pin"):
        lock.parse("numpy>=1.26")


def test_diff_names_added_removed_changed():
    assert lock.diff({"a": "1", "b": "2", "c": "3"}, {"a": "1", "b": "2.1", "d": "4"}) == [
        "b: 2 -> 2.1", "c: 3 -> (removed)", "d: (new) -> 4"]


def test_pytest_summary():
    assert lock.pytest_summary(PASSED_LOG) == "950 passed, 9 skipped"
    assert lock.pytest_summary(FAILED_LOG) == "1 failed, 953 passed, 9 skipped"
    assert lock.pytest_summary("collected nothing") == "no pytest summary line"


@pytest.mark.parametrize("passed", [True, False])
def test_adopt_only_after_a_passing_suite(tmp_path, passed):
    old = tmp_path / "cp311-linux-x86_64.txt"
    old.write_text(lock.render({"ml-dtypes": "0.6.0", "numpy": "2.3.5"}, old.stem))
    candidate = tmp_path / "candidate.txt"
    candidate.write_text(lock.render({"ml-dtypes": "0.7.0", "numpy": "2.3.5"}, old.stem))
    log = tmp_path / "pytest.log"
    log.write_text(PASSED_LOG if passed else FAILED_LOG)
    before = old.read_text()
    code = lock.adopt(old, candidate, log, 0 if passed else 1)
    record = (tmp_path / lock.CHANGES).read_text()
    assert "- ml-dtypes: 0.6.0 -> 0.7.0" in record and "numpy" not in record
    if passed:
        assert code == 0 and lock.parse(old.read_text())["ml-dtypes"] == "0.7.0" and not candidate.exists()
        assert "adopted" in record and "950 passed, 9 skipped" in record
    else:
        assert code == 1 and old.read_text() == before and candidate.exists()
        assert "NOT adopted" in record and "1 failed" in record


def quickstart_extras() -> list[str]:
    """The extras `make install` asks for (its `-e ".[...]"` line), so the lock follows the Makefile."""
    (extras,) = re.findall(r'-e "\.\[([\w,-]+)\]"', (ROOT / "Makefile").read_text().split("$(STAMP):", 1)[1])
    return extras.split(",")


@pytest.fixture
def installed_lock() -> Path:
    """The lock `make` installed this venv from; skips where none was used (USE_LOCK=0, and `make lock`, whose
    suite judges the newest releases before any lock holds them)."""
    stamp = Path(sys.prefix) / ".installed"
    used = stamp.read_text().strip() if stamp.is_file() else ""
    if not used:
        pytest.skip("this venv was not installed from a lock (USE_LOCK=0, `make lock`, or not by make)")
    return ROOT / used


def test_installed_lock_satisfies_pyproject(installed_lock):
    """The lock pins each direct requirement of the quickstart's install (dependencies and the extras the
    Makefile installs, with those they pull in; not `gpu`) at a version inside pyproject.toml's range for it."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted, todo = [Requirement(r) for r in project["dependencies"]], quickstart_extras()
    assert "dev" in todo and "gpu" not in todo, todo
    while todo:
        for r in map(Requirement, extras[todo.pop()]):
            if r.name == "mixtral-trt":
                todo += sorted(r.extras)
            else:
                wanted.append(r)
    pinned = lock.parse(installed_lock.read_text())
    bad = [f"{r} (lock: {pinned.get(lock.normalize(r.name), 'absent')})" for r in wanted
           if not r.specifier.contains(pinned.get(lock.normalize(r.name), "0.dev0"), prereleases=True)]
    assert not bad, f"{installed_lock.name} does not satisfy pyproject.toml: {bad}; run `make lock`"


def test_this_venv_is_its_lock(installed_lock):
    """Every installed distribution is pinned in the lock at the version installed: a dependency added to
    pyproject.toml without `make lock` (installed unpinned) fails here."""
    pinned = lock.parse(installed_lock.read_text())
    installed = lock.freeze()
    unpinned = sorted(set(installed) - set(pinned))
    differ = sorted(f"{n} {installed[n]} (lock {pinned[n]})" for n in installed.keys() & pinned.keys()
                    if installed[n] != pinned[n])
    assert not unpinned and not differ, (f"{installed_lock.name} is stale: unpinned {unpinned}; differ {differ}; "
                                         "run `make lock`")
