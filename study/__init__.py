"""Hand-run studies on a finished run: `python -m study.<name> --help` from the repository root (results in
study/results.md and docs/)."""

from __future__ import annotations

from pathlib import Path

import yaml

from lookalike.catalogue.description import CatalogueDescription
from lookalike.params import catalogue_description


def project_catalogue(project: Path) -> tuple[dict, CatalogueDescription]:
    """A project's params.yaml and its catalogue's description (``data.catalogue``, relative to the project).
    Exits with a message when the catalogue has no label: these studies score relevance by it."""
    params = yaml.safe_load((Path(project) / "params.yaml").read_text())
    description = catalogue_description(params, Path(project))
    if description.label is None:
        raise SystemExit(f"{description.source} names no label: this study scores relevance by the label "
                         "(same label = relevant)")
    return params, description
