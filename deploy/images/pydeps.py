"""Print the third-party requirements of the project's own packages, one per line, for an image's dependency layer.

Why: a Dockerfile that copies the source and then installs it reinstalls every dependency on each source change.
Installing what this prints from the `pyproject.toml` files alone gives a layer that changes only when a dependency
does; the source is then installed with ``--no-deps`` in seconds.

Usage: python pydeps.py shared[train,wandb] services/worker ...   (directories holding a pyproject.toml, with extras)
A requirement on another listed package (``sage-ft-core[train]``) pulls in that package's requirements and the
extras it names, instead of the package itself. Only the standard library is used: it runs in a bare base image.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

_SPEC = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?(.*)$")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _split(spec: str) -> tuple[str, set[str]]:
    match = _SPEC.match(spec)
    if not match:
        raise SystemExit(f"pydeps: cannot read {spec!r}")
    extras = {e.strip() for e in (match.group(2) or "").split(",") if e.strip()}
    return match.group(1), extras


def requirements(targets: list[str]) -> list[str]:
    projects: dict[str, dict] = {}
    wanted: list[tuple[str, set[str]]] = []
    for target in targets:
        path, _, tail = target.partition("[")
        extras = {e.strip() for e in tail.rstrip("]").split(",") if e.strip()}
        project = tomllib.loads((Path(path) / "pyproject.toml").read_text())["project"]
        projects[_canonical(project["name"])] = project
        wanted.append((_canonical(project["name"]), extras))
    out: list[str] = []
    seen: set[tuple[str, str]] = set()
    while wanted:
        name, extras = wanted.pop(0)
        project = projects[name]
        specs = list(project.get("dependencies", []))
        for extra in sorted(extras):
            if extra not in project.get("optional-dependencies", {}):
                raise SystemExit(f"pydeps: {project['name']} has no extra {extra!r}")
            specs += project["optional-dependencies"][extra]
        for spec in specs:
            dep, dep_extras = _split(spec)
            if _canonical(dep) in projects:
                wanted.append((_canonical(dep), dep_extras))
            elif (name, spec) not in seen:
                seen.add((name, spec))
                out.append(spec.strip())
    return out


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    print("\n".join(requirements(sys.argv[1:])))
