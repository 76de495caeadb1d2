"""The policy archive: every version in force, kept content-addressed beside the audit log.

A decision's audit record names its ``policy_version``: the SHA-256 of the
merged policy's canonical content (:func:`gateway.policy.loader.version_of`).
The gateway writes that content to ``<audit dir>/policies/<version>.json``
when the version is first loaded, so an auditor can read the rules behind
any decision (``gateway policy show VERSION``) and what changed between two
(``gateway policy diff A B``). A file is accepted only if its content hashes
to its name: an edited archive is caught, as an edited log is.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

from gateway.errors import GatewayError
from gateway.policy.loader import version_of

#: The archive's directory under the audit directory.
ARCHIVE_DIR: Final = "policies"


def archive_dir(audit_dir: Path) -> Path:
    """Where the versions of the policies whose decisions ``audit_dir`` records are kept."""
    return audit_dir / ARCHIVE_DIR


def _text(content: Mapping[str, Any]) -> str:
    return json.dumps(content, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def archive_policy(directory: Path, version: str, content: Mapping[str, Any]) -> Path:
    """Keep ``content`` as ``<directory>/<version>.json`` (once; written, synced, renamed).

    Raises:
        ValueError: ``content`` does not hash to ``version``.
        OSError: the file cannot be written.
    """
    content = dict(content)
    if version_of(content) != version:
        raise ValueError("the content does not hash to its version")
    path = directory / f"{version}.json"
    if path.exists():
        return path
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / f".{version}.json.tmp"
    with partial.open("w", encoding="utf-8") as out:
        out.write(_text(content))
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, path)
    return path


def read_version(directory: Path, version: str) -> dict[str, Any]:
    """The archived content of ``version`` (a unique prefix of at least 8 hex digits will do).

    Raises:
        GatewayError: no such version, an ambiguous prefix, or a file whose
            content does not hash to its name.
    """
    path = _find(directory, version)
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise GatewayError(f"{path}: unreadable ({exc})") from None
    if not isinstance(content, dict) or version_of(content) != path.stem:
        raise GatewayError(f"{path}: its content does not hash to its name; it was altered")
    return content


def _find(directory: Path, version: str) -> Path:
    if len(version) < 8 or any(c not in "0123456789abcdef" for c in version):
        raise GatewayError("a version is 8 to 64 lower-case hex digits")
    matches = sorted(directory.glob(f"{version}*.json")) if directory.is_dir() else []
    if not matches:
        raise GatewayError(f"version {version} is not in the archive {directory}")
    if len(matches) > 1:
        raise GatewayError(f"{version} names {len(matches)} versions; give more digits")
    return matches[0]


def show(content: Mapping[str, Any]) -> str:
    """The content as the archive holds it (sorted keys, indented JSON)."""
    return _text(content)


def diff(directory: Path, old: str, new: str) -> list[str]:
    """What changed between two archived versions, as a unified diff of their content."""
    a, b = read_version(directory, old), read_version(directory, new)
    return list(
        difflib.unified_diff(
            _text(a).splitlines(keepends=True),
            _text(b).splitlines(keepends=True),
            fromfile=version_of(a),
            tofile=version_of(b),
        )
    )


def files_digest(files: Iterable[Path]) -> str:
    """SHA-256 over the policy files' names and bytes: what a rejected version was.

    A version that did not load has no content hash; this names the files
    that were on disk (unreadable ones count as their name alone).
    """
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(str(path.name).encode() + b"\0")
        with contextlib.suppress(OSError):  # an unreadable file counts by its name
            digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()
