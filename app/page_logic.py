"""Plain-Python helpers for the shopper page: settings, artifact facts and labels.

Kept free of Streamlit so the rules (which folder, which upload cap, what the
sidebar says about the model) can be read and tested without running the page.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from lookalike.preprocessing import UPLOAD_EXTENSIONS

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS_ENV = "LOOKALIKE_ARTIFACTS"
DEFAULT_K = 5
DEFAULT_MAX_UPLOAD_MB = 10.0
MAX_K = 20
UPLOAD_TYPES = UPLOAD_EXTENSIONS  # the decoder's list: the uploader offers exactly what the search accepts
FILTER_LABELS = {"gender": "Gender", "masterCategory": "Category", "articleType": "Product type",
                 "baseColour": "Colour"}
BUILD_COMMAND = "dvc repro"


def artifacts_dir(environ: dict[str, str] | None = None) -> Path:
    """The artifacts folder: $LOOKALIKE_ARTIFACTS when set (tests point it at a broken copy), else ./artifacts."""
    value = (environ if environ is not None else os.environ).get(ARTIFACTS_ENV, "").strip()
    return Path(value).expanduser().resolve() if value else ROOT / "artifacts"


def metrics_path(artifacts: Path) -> Path:
    """metrics/metrics.json beside the artifacts folder, so an overridden folder never borrows foreign metrics."""
    return artifacts.parent / "metrics" / "metrics.json"


@dataclass(frozen=True)
class PageSettings:
    """What params.yaml says about the page: default K and the upload cap."""

    default_k: int = DEFAULT_K
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB

    @property
    def max_bytes(self) -> int:
        """The searcher's cap in bytes; decimal MB, the unit InvalidImageError messages print."""
        return int(self.max_upload_mb * 1_000_000)

    @property
    def widget_max_mb(self) -> int:
        """Streamlit's per-widget cap (whole MiB, never below ours), so oversized files still reach our message."""
        return max(1, math.ceil(self.max_upload_mb))


def read_settings(params_path: Path | None = None) -> PageSettings:
    """search.k and search.max_upload_mb from params.yaml; defaults when the file or keys are missing or invalid."""
    path = params_path or ROOT / "params.yaml"
    try:
        search = (yaml.safe_load(path.read_text()) or {}).get("search") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        search = {}
    k, mb = search.get("k", DEFAULT_K), search.get("max_upload_mb", DEFAULT_MAX_UPLOAD_MB)
    valid_k = isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= MAX_K
    valid_mb = isinstance(mb, (int, float)) and not isinstance(mb, bool) and mb > 0
    return PageSettings(k if valid_k else DEFAULT_K, float(mb) if valid_mb else DEFAULT_MAX_UPLOAD_MB)


@dataclass(frozen=True)
class ArtifactInfo:
    """The few facts a shopper-facing page shows about the model it runs."""

    model_hash: str
    index_hash: str
    created: str
    items: int
    backbone: str
    index_type: str
    precision_at_5: float | None


def format_created(value: str) -> str:
    """ISO timestamp from the manifest as 'YYYY-MM-DD HH:MM UTC' (unchanged when unparsable)."""
    try:
        stamp = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return str(value or "unknown")
    if stamp.tzinfo is None:
        return stamp.strftime("%Y-%m-%d %H:%M")
    return stamp.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def read_precision_at_5(path: Path) -> float | None:
    """trained.precision_at_5 from metrics.json, or None when it is not there."""
    try:
        value = json.loads(path.read_text())["trained"]["precision_at_5"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return float(value) if isinstance(value, (int, float)) else None


def artifact_info(manifest: dict[str, Any], metrics: Path) -> ArtifactInfo:
    """Summarise the manifest the searcher verified, plus the test metric."""
    files = manifest.get("files", {})
    params = manifest.get("params", {})
    return ArtifactInfo(
        model_hash=str(files.get("model", {}).get("sha256", ""))[:12],
        index_hash=str(files.get("index", {}).get("sha256", ""))[:12],
        created=format_created(manifest.get("created_at", "")),
        items=int(manifest.get("count", 0)),
        backbone=str(params.get("backbone", "unknown")),
        index_type=str(params.get("index", {}).get("type", "unknown")),
        precision_at_5=read_precision_at_5(metrics),
    )


def item_label(item_id: int, name: str) -> str:
    """How a catalogue item reads in the product picker: id first, so typing either finds it."""
    return f"{item_id} · {name}"


def display_name(metadata: dict[str, str]) -> str:
    """The product name, or a stand-in for the few catalogue rows without one."""
    name = str(metadata.get("productDisplayName") or "").strip()
    return name if name and name != "nan" else "Unnamed product"


def describe(metadata: dict[str, str]) -> str:
    """One short line under a product: type, colour, gender."""
    parts = (metadata.get("articleType"), metadata.get("baseColour"), metadata.get("gender"))
    return " · ".join(p for p in parts if p and p != "nan")


def page_count(total: int, per_page: int) -> int:
    """Pages needed for ``total`` items; at least one so the pager always renders."""
    return max(1, math.ceil(total / per_page))


_MARKDOWN_SPECIALS = "\\`*_[]<>#|~$"  # the ones that matter mid-sentence


def escape_markdown(text: str) -> str:
    """Show shopper-provided text (file names) literally inside Streamlit markdown."""
    return "".join(f"\\{c}" if c in _MARKDOWN_SPECIALS else c for c in str(text))
