"""The locks (requirements/*.txt, written by scripts/lock.sh) are in step with pyproject.toml.

A dependency added, dropped or re-bounded without re-locking fails here, in seconds, rather than in the Docker
build, in CI's install, or as a version nobody tested on a user's machine.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
#: Each lock and the extra it installs (scripts/lock.sh).
LOCKS = {"requirements/dev.txt": "dev", "requirements/docker.txt": "otel"}
FIX = "re-lock with `bash scripts/lock.sh` and commit requirements/"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")
_SELF = canonicalize_name(PYPROJECT["project"]["name"])


@dataclass
class Pin:
    version: Version
    hashes: int = 0
    via: set[str] = field(default_factory=set)


def parse_lock(text: str) -> dict[str, Pin]:
    """name → pin of a `uv pip compile --generate-hashes` file, with the `# via` annotations of each."""
    pins: dict[str, Pin] = {}
    current: Pin | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if match := _PIN.match(line):
            current = pins[canonicalize_name(match[1])] = Pin(Version(match[2]))
        elif current is not None and stripped.startswith("--hash="):
            current.hashes += 1
        elif current is not None and stripped.startswith("#") and line.startswith("    "):
            via = stripped.lstrip("#").strip().removeprefix("via").strip()
            if via:
                current.via.add(via)
    return pins


def direct_requirements(extra: str) -> list[Requirement]:
    """What `pip install '.[extra]'` asks for by name: the project's dependencies and the extra's, self-references
    (`xnovu[otel,embedded]`) expanded."""
    extras = PYPROJECT["project"]["optional-dependencies"]
    wanted, seen, out = [extra], set(), [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    while wanted:
        name = wanted.pop()
        if name in seen:
            continue
        seen.add(name)
        for text in extras[name]:
            req = Requirement(text)
            if canonicalize_name(req.name) == _SELF:
                wanted.extend(req.extras)
            else:
                out.append(req)
    return out


def build_requirements() -> list[Requirement]:
    return [Requirement(r) for r in PYPROJECT["build-system"]["requires"]]


@pytest.fixture(scope="module", params=sorted(LOCKS))
def lock(request: pytest.FixtureRequest) -> tuple[str, str, dict[str, Pin]]:
    path: str = request.param
    return path, LOCKS[path], parse_lock((ROOT / path).read_text(encoding="utf-8"))


def test_every_dependency_of_pyproject_is_locked_within_its_bounds(lock: tuple[str, str, dict[str, Pin]]) -> None:
    path, extra, pins = lock
    problems = []
    for req in [*direct_requirements(extra), *build_requirements()]:
        pin = pins.get(canonicalize_name(req.name))
        if pin is None:
            problems.append(f"{req} is not in {path}")
        elif not req.specifier.contains(pin.version, prereleases=True):
            problems.append(f"{path} locks {req.name}=={pin.version}, outside {req}")
    assert not problems, f"{'; '.join(problems)}: {FIX}"


def test_the_lock_keeps_no_dependency_that_pyproject_dropped(lock: tuple[str, str, dict[str, Pin]]) -> None:
    path, extra, pins = lock
    direct = {canonicalize_name(r.name) for r in direct_requirements(extra)}
    locked_as_direct = {name for name, pin in pins.items() if f"{_SELF} (pyproject.toml)" in pin.via}
    assert locked_as_direct == direct, f"{path} differs from pyproject.toml by {locked_as_direct ^ direct}: {FIX}"


def test_every_pin_is_checked_by_hash_and_names_no_index(lock: tuple[str, str, dict[str, Pin]]) -> None:
    path, _, pins = lock
    assert [name for name, pin in pins.items() if pin.hashes == 0] == [], f"pins without a hash in {path}: {FIX}"
    text = (ROOT / path).read_text(encoding="utf-8")
    # An index or a local mirror in the file would send every install there (pip.conf chooses the index instead).
    options = [s for s in text.splitlines() if s.startswith(("-i", "--index", "--extra-index", "-f", "--find"))]
    assert options == [] and "file:" not in text and "://" not in text, f"{path} names an index: {FIX}"
    assert "bash scripts/lock.sh" in text.splitlines()[1], f"{path} was not written by scripts/lock.sh: {FIX}"


def test_the_image_runs_the_versions_ci_tests() -> None:
    dev = parse_lock((ROOT / "requirements/dev.txt").read_text(encoding="utf-8"))
    docker = parse_lock((ROOT / "requirements/docker.txt").read_text(encoding="utf-8"))
    differ = {name: (str(pin.version), str(dev[name].version) if name in dev else None) for name, pin in docker.items()}
    assert {n: v for n, v in differ.items() if v[0] != v[1]} == {}, f"requirements/docker.txt vs dev.txt: {FIX}"


def test_the_otel_extra_depends_on_no_contrib_instrumentation() -> None:
    """The contrib instrumentations pin OpenTelemetry releases exactly; with them the pip of Python 3.11 cannot
    resolve `pip install 'xnovu[otel]'` (README "Installation and dependencies"): xnovu makes those spans itself."""
    every = [r for extra in PYPROJECT["project"]["optional-dependencies"] for r in direct_requirements(extra)]
    assert [str(r) for r in every if r.name.startswith("opentelemetry-instrumentation")] == []
