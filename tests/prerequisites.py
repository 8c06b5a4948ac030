"""The test suite's system prerequisites: check them, and install what is missing where that is possible.

    python3 tests/prerequisites.py            # install what is missing (Debian/Ubuntu, as root or with sudo)
    python3 tests/prerequisites.py --check    # only say what is missing; exit 1 if anything is

The README's test command runs this first, so a fresh clone on Debian or Ubuntu needs nothing but Python
≥ 3.11 and pip. Elsewhere it names what to install and stops. Python packages are not its business: uv
installs them from ``uv.lock``. Standard library only: it runs before any virtual environment exists.
``tests/test_prerequisites.py`` proves that every program the tests start is listed here.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Requirement:
    """A program the tests start (``programs``: names on PATH or path globs), its Debian package, and why."""

    programs: tuple[str, ...]
    debian: tuple[str, ...]
    why: str
    elsewhere: str

    def missing(self) -> list[str]:
        return [p for p in self.programs if not (glob.glob(p) if "/" in p else shutil.which(p))]


REQUIREMENTS = (
    Requirement(("g++", "cmake"), ("g++", "cmake"), "build llama-cpp-python, the embedded model of the 'local' extra",
                "a C++17 compiler and CMake 3.21+ (macOS: xcode-select --install; brew install cmake)"),
    Requirement(("/usr/lib/postgresql/*/bin/initdb", "/usr/lib/postgresql/*/bin/pg_ctl"), ("postgresql",),
                "a real PostgreSQL server for the session-store tests (tests/fakes/postgres.py)",
                "PostgreSQL 14+ server binaries (macOS: brew install postgresql@16, then link initdb and pg_ctl "
                "under /usr/lib/postgresql/16/bin)"),
    Requirement(("prometheus", "promtool"), ("prometheus",),
                "a real Prometheus and promtool for the dashboard tests (tests/fakes/prometheus.py)",
                "Prometheus 2.45+ with promtool on PATH (macOS: brew install prometheus)"),
    Requirement(("haproxy",), ("haproxy",),
                "a real load balancer in front of three replicas (tests/fakes/haproxy.py, tests/test_replicas.py)",
                "HAProxy 2.4+ on PATH (macOS: brew install haproxy)"),
    Requirement(("chromium",), ("chromium",),
                "the system browser Playwright drives in the page tests (tests/browser.py; nothing downloads one)",
                "Chromium or Chrome as `chromium` on PATH (macOS: brew install --cask chromium)"),
    Requirement(("node", "npm"), ("nodejs", "npm"),
                "Node.js runs the AG-UI protocol's own client (tests/test_ag_ui_client.py; npm ci installs it)",
                "Node.js 18+ with npm (macOS: brew install node)"),
)


def missing() -> list[Requirement]:
    return [r for r in REQUIREMENTS if r.missing()]


def report(requirements: list[Requirement]) -> None:
    for r in requirements:
        print(f"  missing: {', '.join(r.missing())} — {r.why}\n"
              f"           Debian/Ubuntu: apt-get install {' '.join(r.debian)}; elsewhere: {r.elsewhere}",
              file=sys.stderr)


def install(requirements: list[Requirement]) -> bool:
    """``apt-get install`` the Debian packages of ``requirements``; False where that cannot be done here."""
    if not shutil.which("apt-get"):
        return False
    sudo: list[str] = []
    if os.geteuid() != 0:
        if not shutil.which("sudo") or subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode:
            return False
        sudo = ["sudo", "-n"]
    packages = sorted({p for r in requirements for p in r.debian})
    print(f"tests/prerequisites.py: apt-get install {' '.join(packages)}", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", *packages], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    return not missing()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report what is missing (exit 1 if anything)")
    args = parser.parse_args(argv)
    absent = missing()
    if not absent:
        print("tests/prerequisites.py: every program the tests need is installed", file=sys.stderr)
        return 0
    if args.check:
        print("tests/prerequisites.py --check: the tests need programs that are not installed:", file=sys.stderr)
        report(absent)
        return 1
    if install(absent):
        return 0
    print("tests/prerequisites.py: cannot install these here (not Debian/Ubuntu, or neither root nor passwordless "
          "sudo); install them, then run the test command again:", file=sys.stderr)
    report(missing())
    return 1


if __name__ == "__main__":
    sys.exit(main())
