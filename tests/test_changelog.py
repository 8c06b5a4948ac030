"""CHANGELOG.md keeps the Keep a Changelog format (https://keepachangelog.com/en/1.1.0/), and its newest version is
the one the package, the manifests and the deployment tutorial's build commands carry: a release cannot forget to
say what changed for operators."""

from __future__ import annotations

import re
import tomllib
from datetime import date
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHANGELOG = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
VERSION_HEADER = re.compile(r"^## \[(\d+\.\d+\.\d+)\] - (\d{4}-\d{2}-\d{2})$", re.M)
# Keep a Changelog's types of changes, in its order.
TYPES = ["Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"]


def package_version() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"])


def test_the_changelog_has_an_unreleased_section_and_dated_versions_newest_first() -> None:
    assert CHANGELOG.startswith("# Changelog\n")
    headers = re.findall(r"^## .+$", CHANGELOG, re.M)
    assert headers[0] == "## [Unreleased]"
    released = VERSION_HEADER.findall(CHANGELOG)
    assert len(released) == len(headers) - 1, [h for h in headers[1:] if not VERSION_HEADER.match(h)]
    versions = [tuple(int(part) for part in version.split(".")) for version, _ in released]
    dates = [date.fromisoformat(day) for _, day in released]
    assert versions == sorted(versions, reverse=True) and len(set(versions)) == len(versions)
    assert dates == sorted(dates, reverse=True)


def test_each_version_says_what_operators_do_and_uses_only_the_standard_types_in_order() -> None:
    sections = VERSION_HEADER.split(CHANGELOG)[1:]
    for version, _, body in zip(sections[::3], sections[1::3], sections[2::3], strict=True):
        kinds = re.findall(r"^### (.+)$", body, re.M)
        assert kinds and set(kinds) <= set(TYPES), (version, kinds)
        assert kinds == sorted(kinds, key=TYPES.index), (version, kinds)
        assert re.search(r"^\*\*(Upgrading from \d+\.\d+\.\d+|Installing):\*\*", body, re.M), version


def test_the_newest_version_is_the_one_everything_carries() -> None:
    newest = VERSION_HEADER.search(CHANGELOG)
    assert newest is not None and newest.group(1) == package_version()
    version = package_version()
    for manifest in ("deployment.yaml", "deploy/eval-job.yaml"):
        for document in yaml.safe_load_all((ROOT / manifest).read_text(encoding="utf-8")):
            text = yaml.safe_dump(document)
            labels = re.findall(r"app\.kubernetes\.io/version: '?([\d.]+)'?", text)
            images = re.findall(r"question-app:([\w.-]+)", text)
            assert set(labels) | set(images) <= {version}, (manifest, labels, images)
    tutorial = (ROOT / "docs" / "tutorials" / "deploy-to-aks.md").read_text(encoding="utf-8")  # its build commands
    assert set(re.findall(r"question-app:(\d+\.\d+\.\d+)", tutorial)) == {version}
