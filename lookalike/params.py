"""Loading and checking ``params.yaml`` before any work starts.

A wrong value fails fast with one message naming the param, instead of a stack
trace twenty minutes into a run.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from lookalike.catalogue.description import CatalogueDescription, DescriptionError, load_description
from lookalike.model.backbones import BACKBONES, backbone_info
from lookalike.model.preprocessing import PreprocessSpec
from lookalike.search.index import INDEX_TYPES

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LOSSES = ("triplet", "triplet_soft", "multi_similarity", "proxy_softmax")
MININGS = ("random", "semihard", "batch_hard")  # for the triplet losses
ENGINES = ("local", "ray")  # embed.engine: in-process, or Ray Data
SELECTIONS = ("map_at_r", "look", "look_map_at_r", "no_regression")  # train.selection: how the kept step is chosen
BATCH_BY = ("label", "look")  # train.batch_by: what a P x K batch's P classes are
INSTANCE_COLUMN = "@instance"  # a sub-space trained on the photo itself: its other views are positives
# a sub-space that is not trained: the head's input (backbone features and colour descriptor) on its principal axes,
# which keeps what tells one product from another of its type and colour (the label-trained sub-spaces drop it)
FEATURES_COLUMN = "@features"
STORED_TARGET = "stored"  # text.target: the whole stored vector (else one sub-space's name)
AUTO_TARGET = "auto"  # text.target: the FEATURES_COLUMN sub-space when the build has one, else the whole stored vector


class ParamsError(ValueError):
    """A value in params.yaml is invalid; the message names it."""


def _require(params: dict, dotted: str) -> Any:
    value: Any = params
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise ParamsError(f"params.yaml: missing '{dotted}'")
        value = value[part]
    return value


def _check(condition: bool, dotted: str, message: str, value: Any) -> None:
    if not condition:
        raise ParamsError(f"params.yaml: {dotted} = {value!r}: {message}")


def _int_at_least(params: dict, dotted: str, minimum: int) -> None:
    value = _require(params, dotted)
    _check(isinstance(value, int) and not isinstance(value, bool) and value >= minimum, dotted,
           f"must be an integer >= {minimum}", value)


def _fraction(params: dict, dotted: str) -> None:
    value = _require(params, dotted)
    _check(isinstance(value, (int, float)) and 0 < value < 1, dotted, "must be a number between 0 and 1", value)


def _optional_number(params: dict, dotted: str, minimum: float, maximum: float | None = None) -> None:
    """A number within [minimum, maximum] if ``section.key`` is given; the code's default applies when absent."""
    section, key = dotted.split(".")
    if key not in params[section]:
        return
    value = params[section][key]
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    _check(number and minimum <= value and (maximum is None or value <= maximum), dotted,
           f"must be a number from {minimum} to {maximum}" if maximum is not None
           else f"must be a number at least {minimum}", value)


def _choice(params: dict, dotted: str, choices: tuple[str, ...]) -> None:
    value = _require(params, dotted)
    _check(value in choices, dotted, f"must be one of {', '.join(choices)}", value)


def validate(params: dict, root: Path = PROJECT_ROOT) -> dict:
    """Raise :class:`ParamsError` on the first invalid value; return params unchanged."""
    catalogue = root / _require(params, "data.catalogue_dir")
    _check(catalogue.is_dir(), "data.catalogue_dir", f"folder {catalogue} does not exist", str(catalogue))
    _int_at_least(params, "subset.size", 2)
    _int_at_least(params, "subset.min_per_class", 2)
    _fraction(params, "subset.test_fraction")
    _fraction(params, "subset.val_fraction")
    _choice(params, "backbone.name", BACKBONES)
    _int_at_least(params, "backbone.image_size", 32)
    _check(params["backbone"]["image_size"] <= 1024, "backbone.image_size", "must be at most 1024",
           params["backbone"]["image_size"])
    _choice(params, "backbone.resize_mode", ("pad", "stretch"))
    moved = params["backbone"].get("sharpen_queries_below")
    _check(moved is None, "backbone.sharpen_queries_below",
           "moved to search.sharpen_queries_below (a query-time setting)", moved)
    _int_at_least(params, "features.batch_size", 1)
    _int_at_least(params, "features.augmented_views", 0)
    _optional_number(params, "features.alteration_rate", 0, 1)  # 0.5 when absent
    _int_at_least(params, "model.hidden_dim", 1)
    _int_at_least(params, "model.embedding_dim", 1)
    _choice(params, "model.embedding", ("head", "concat"))
    _choice(params, "train.loss", LOSSES)
    _choice(params, "train.mining", MININGS)
    _int_at_least(params, "train.classes_per_batch", 2)
    _int_at_least(params, "train.images_per_class", 2)
    _int_at_least(params, "train.steps", 1)
    _int_at_least(params, "train.eval_every", 1)
    _int_at_least(params, "train.patience", 1)
    for name, minimum in (("instance_rows", 2), ("instance_views", 2), ("neighbour_groups", 0)):
        if name in params["train"]:  # optional: lookalike/model/training.py has the defaults
            _int_at_least(params, f"train.{name}", minimum)
    if "instance_temperature" in params["train"]:
        value = params["train"]["instance_temperature"]
        _check(isinstance(value, (int, float)) and value > 0, "train.instance_temperature", "must be > 0", value)
    if "transductive" in params["train"]:
        _check(isinstance(params["train"]["transductive"], bool), "train.transductive", "must be true or false",
               params["train"]["transductive"])
    _choice(params, "train.selection", SELECTIONS)
    if "batch_by" in params["train"]:  # optional: label (the default) or look
        _choice(params, "train.batch_by", BATCH_BY)
    _int_at_least(params, "train.finetune_blocks", 0)
    _int_at_least(params, "train.finetune_steps", 0)
    blocks = backbone_info(params["backbone"]["name"]).num_blocks
    _check(params["train"]["finetune_blocks"] < blocks, "train.finetune_blocks",
           f"{params['backbone']['name']} has {blocks} blocks; at most {blocks - 1} can train",
           params["train"]["finetune_blocks"])
    _check(not (params["train"]["finetune_blocks"] and params["train"]["selection"] == "no_regression"),
           "train.selection", "no_regression compares pooled pretrained features; it needs finetune_blocks: 0",
           params["train"]["selection"])
    _choice(params, "index.type", INDEX_TYPES)
    for knob in ("nlist", "nprobe", "pq_m", "pq_bits", "hnsw_m", "ef_construction", "ef_search"):
        _int_at_least(params, f"index.{knob}", 1)
    params["index"].setdefault("query_expansion", 0)  # a params file from before the option: off
    params["index"].setdefault("expansion_power", 3)
    _int_at_least(params, "index.query_expansion", 0)
    power = params["index"]["expansion_power"]
    _check(isinstance(power, (int, float)) and not isinstance(power, bool) and 0 <= power <= 100,
           "index.expansion_power", "must be a number from 0 to 100", power)
    embedding_dim = params["model"]["embedding_dim"]
    _check_subspaces(params)
    if params["index"]["type"] == "ivf_pq":
        _check(embedding_dim % params["index"]["pq_m"] == 0, "index.pq_m",
               f"must divide model.embedding_dim ({embedding_dim})", params["index"]["pq_m"])
    if "embed" in params:  # optional section: the embed stage's engine (lookalike/model/distributed.py for ray)
        _choice(params, "embed.engine", ENGINES)
        _int_at_least(params, "embed.workers", 0)
    _int_at_least(params, "search.k", 1)
    max_mb = _require(params, "search.max_upload_mb")
    _check(isinstance(max_mb, (int, float)) and max_mb > 0, "search.max_upload_mb", "must be > 0", max_mb)
    _optional_number(params, "search.sharpen_queries_below", 0)  # 0 (never) when absent
    return params


def _check_subspaces(params: dict) -> None:
    """Fill the look-aware model's defaults (a params file without them trains the type-only head, as
    before) and check them: one sub-space per attribute, dims adding up to model.embedding_dim, weights > 0
    (a stored sub-vector with weight 0 could never be asked for again by a query)."""
    model = params["model"]
    model.setdefault("colour_descriptor", False)
    label = catalogue_description(params).label or INSTANCE_COLUMN  # no label: the photo itself (self-supervised)
    model.setdefault("subspaces", {"type": {"column": label, "dim": model["embedding_dim"], "weight": 1.0}})
    subspaces = model["subspaces"]
    _check(isinstance(subspaces, dict) and len(subspaces) >= 1, "model.subspaces",
           "must map sub-space names to {column, dim, weight}", subspaces)
    for name, spec in subspaces.items():
        _check(isinstance(spec, dict) and {"column", "dim", "weight"} <= set(spec), f"model.subspaces.{name}",
               "needs column, dim and weight", spec)
        _check(isinstance(spec["dim"], int) and spec["dim"] >= 1, f"model.subspaces.{name}.dim",
               "must be an integer >= 1", spec["dim"])
        _check(isinstance(spec["weight"], (int, float)) and spec["weight"] > 0, f"model.subspaces.{name}.weight",
               "must be > 0", spec["weight"])
    total = sum(spec["dim"] for spec in subspaces.values())
    _check(total == model["embedding_dim"], "model.subspaces",
           f"dims add up to {total}, not model.embedding_dim ({model['embedding_dim']})", list(subspaces))
    fixed = [name for name, spec in subspaces.items() if spec["column"] == FEATURES_COLUMN]
    _check(len(fixed) <= 1, "model.subspaces", f"at most one sub-space can be the features ({FEATURES_COLUMN})", fixed)
    _check(len(fixed) < len(subspaces), "model.subspaces", f"needs a trained sub-space beside {FEATURES_COLUMN}", fixed)
    if "text" in params:
        target = text_target(params)
        _check(target == STORED_TARGET or target in subspaces, "text.target",
               f"must be {AUTO_TARGET}, {STORED_TARGET} (the whole stored vector) or a sub-space "
               f"({', '.join(subspaces)})", target)
        _check(target == STORED_TARGET or model["embedding"] == "head", "text.target",
               "a sub-space needs model.embedding: head (a concatenated embedding has no sub-spaces)", target)
    for mode, weights in (params.get("similarity") or {}).items():
        _check(isinstance(weights, dict) and set(weights) <= set(subspaces)
               and all(isinstance(w, (int, float)) and w >= 0 for w in weights.values()),
               f"similarity.{mode}", f"must map sub-spaces ({', '.join(subspaces)}) to weights >= 0", weights)


def text_target(params: dict) -> str:
    """What words search (``text.target``, resolved): a sub-space's name, or STORED_TARGET for the whole stored
    vector. AUTO_TARGET (the default) is the FEATURES_COLUMN sub-space when the build has one."""
    target = params.get("text", {}).get("target", AUTO_TARGET)
    if target != AUTO_TARGET:
        return target
    model = params["model"]
    picture = features_subspace(model)
    return picture if picture and model.get("embedding", "head") == "head" else STORED_TARGET


def features_subspace(model: dict) -> str | None:
    """The name of ``model``'s FEATURES_COLUMN sub-space (the picture), or None without one."""
    return next((name for name, spec in model["subspaces"].items() if spec["column"] == FEATURES_COLUMN), None)


def check_k_fits(params: dict, catalogue_size: int) -> None:
    """search.k must not exceed the items there are to return (known once the subset is built)."""
    _check(params["search"]["k"] <= catalogue_size, "search.k",
           f"is larger than the catalogue ({catalogue_size} items)", params["search"]["k"])


def with_overrides(params: dict, overrides: dict) -> dict:
    """``params`` with another catalogue's params file over it (params-19k.yaml, params-grocery.yaml): each section
    updated key by key, but ``similarity`` (its modes name the sub-spaces) and a section ``params`` lacks replaced
    whole. A file that replaces ``model.subspaces`` gives its own ``model.embedding_dim``. Changes ``params``."""
    for section, values in overrides.items():
        if section == "similarity" or section not in params or not isinstance(params[section], dict):
            params[section] = values
        else:
            params[section].update(values)
    return params


def load_params(path: str | Path | None = None, root: Path = PROJECT_ROOT) -> dict:
    path = Path(path) if path else root / "params.yaml"
    if not path.is_file():
        raise ParamsError(f"params file not found: {path}")
    try:
        params = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ParamsError(f"{path} is not valid YAML: {error}") from error
    if not isinstance(params, dict):
        raise ParamsError(f"{path} must hold a mapping of sections")
    return validate(params, root)


def catalogue_description(params: dict, root: Path = PROJECT_ROOT) -> CatalogueDescription:
    """The catalogue's description named by ``data.catalogue`` (relative to the project root)."""
    path = Path(_require(params, "data.catalogue"))
    try:
        return load_description(path if path.is_absolute() else root / path)
    except DescriptionError as error:
        raise ParamsError(f"params.yaml: data.catalogue: {error}") from None


def preprocess_spec(params: dict) -> PreprocessSpec:
    """How catalogue and training photos become model input: the ``backbone`` section alone (what the features,
    train and embed stages declare), so a query-time setting never reruns them."""
    backbone = params["backbone"]
    return PreprocessSpec(
        image_size=int(backbone["image_size"]),
        resize_mode=backbone["resize_mode"],
        normalisation=backbone_info(backbone["name"]).normalisation,
    )


def query_spec(params: dict) -> PreprocessSpec:
    """:func:`preprocess_spec` with the query-time setting of ``search``: what a build's manifest pins for its
    searcher (a blurred query photo is sharpened below ``search.sharpen_queries_below``; 0, never, when absent)."""
    return replace(preprocess_spec(params),
                   sharpen_queries_below=float(params["search"].get("sharpen_queries_below", 0)))
