"""lookalike.params.validate: every bad value fails fast with a message naming the param."""

from __future__ import annotations

import copy
import re

import pytest
import yaml

from lookalike.params import (
    PROJECT_ROOT,
    ParamsError,
    load_params,
    preprocess_spec,
    query_spec,
    validate,
    with_overrides,
)

PARAMS_FILE = PROJECT_ROOT / "params.yaml"


@pytest.fixture(scope="module")
def real_params() -> dict:
    return yaml.safe_load(PARAMS_FILE.read_text())


@pytest.fixture
def params(real_params, tmp_path) -> dict:
    """A deep copy of params.yaml whose catalogue folder is an existing empty tmp folder."""
    mutable = copy.deepcopy(real_params)
    mutable["data"]["catalogue_dir"] = str(tmp_path)  # absolute: root / absolute = absolute
    return mutable


def set_value(params: dict, dotted: str, value) -> dict:
    section, key = dotted.split(".")
    params[section][key] = value
    return params


def raises_naming(dotted: str):
    return pytest.raises(ParamsError, match=re.escape(dotted))


def test_real_params_file_validates(real_params, shared_catalogue_dir):
    assert validate(copy.deepcopy(real_params)) == real_params
    assert load_params() == real_params


@pytest.mark.parametrize("name", sorted(p.name for p in PROJECT_ROOT.glob("params-*.yaml")))
def test_every_catalogue_s_params_file_validates_over_the_default(real_params, tmp_path, name: str):
    """What study/run_catalogue.sh runs: the default params with another catalogue's file over them. A file that
    brings its own sub-spaces must bring their dimension too (the default's has the picture sub-space in it)."""
    overrides = yaml.safe_load((PROJECT_ROOT / name).read_text())
    merged = with_overrides(copy.deepcopy(real_params), overrides)
    merged["data"]["catalogue_dir"] = str(tmp_path)  # the script makes it absolute; its folder is checked elsewhere
    validate(merged)
    assert merged["similarity"] == overrides.get("similarity", real_params["similarity"])  # replaced whole
    own = overrides.get("model", {}).get("subspaces", real_params["model"]["subspaces"])
    assert merged["model"]["subspaces"] == own  # updated key by key: the file's sub-spaces, not a mix


def test_mutable_copy_validates(params):
    assert validate(params) is params


@pytest.mark.parametrize(("dotted", "bad"), [
    ("backbone.name", "vgg16"),
    ("backbone.name", "EfficientNet_Lite0"),
    ("index.type", "annoy"),
    ("search.k", -3),
    ("search.k", 2.5),
    ("search.k", True),
    ("search.k", 0),
    ("search.k", "5"),
    ("subset.test_fraction", 0),
    ("subset.test_fraction", 1),
    ("subset.test_fraction", 1.5),
    ("subset.test_fraction", -0.2),
    ("subset.test_fraction", "0.2"),
    ("subset.val_fraction", 1.0),
    ("features.alteration_rate", 1.5),
    ("features.alteration_rate", -0.1),
    ("features.alteration_rate", True),
    ("features.alteration_rate", "half"),
    ("train.loss", "contrastive"),
    ("train.mining", "hardest"),
    ("train.selection", "best"),
    ("train.batch_by", "colour"),
    ("backbone.resize_mode", "crop"),
    ("search.sharpen_queries_below", -1),
    ("search.sharpen_queries_below", True),
    ("search.sharpen_queries_below", "blurred"),
    ("backbone.sharpen_queries_below", 400),  # its place before it became a query-time setting: named, not ignored
    ("model.embedding", "both"),
    ("search.max_upload_mb", 0),
])
def test_bad_value_raises_naming_the_param(params, dotted, bad):
    with raises_naming(dotted):
        validate(set_value(params, dotted, bad))


def test_missing_catalogue_folder_raises_naming_the_param(params, tmp_path):
    params["data"]["catalogue_dir"] = str(tmp_path / "no-such-folder")
    with raises_naming("data.catalogue_dir"):
        validate(params)


def test_catalogue_folder_is_resolved_against_root(params, tmp_path):
    (tmp_path / "catalogue").mkdir()
    params["data"]["catalogue_dir"] = "catalogue"
    assert validate(params, root=tmp_path) is params
    with raises_naming("data.catalogue_dir"):
        validate(params, root=tmp_path / "elsewhere")


def test_finetune_blocks_beyond_the_backbone_raise(params):
    params["backbone"]["name"] = "efficientnet_lite0"  # 16 MBConv blocks
    params["train"]["finetune_blocks"] = 15
    validate(params)
    params["train"]["finetune_blocks"] = 16  # the cut would fall before the first block
    with raises_naming("train.finetune_blocks"):
        validate(params)


def test_finetune_blocks_limit_follows_the_backbone(params):
    params["train"]["finetune_blocks"] = 17
    params["backbone"]["name"] = "resnet50"  # 16 residual blocks
    with raises_naming("train.finetune_blocks"):
        validate(params)
    params["backbone"]["name"] = "efficientnet_lite2"  # deeper: 17 is allowed
    validate(params)


def test_pq_m_not_dividing_embedding_dim_raises_for_ivf_pq(params):
    params["index"]["pq_m"] = 48  # 512 dimensions
    params["index"]["type"] = "flat"
    validate(params)  # pq_m only matters for ivf_pq
    params["index"]["type"] = "ivf_pq"
    with raises_naming("index.pq_m"):
        validate(params)
    params["index"]["pq_m"] = 32
    validate(params)


def test_missing_param_raises_naming_it(params):
    del params["train"]["loss"]
    with pytest.raises(ParamsError, match=re.escape("missing 'train.loss'")):
        validate(params)


def test_missing_section_raises_naming_the_param(params):
    del params["search"]
    with raises_naming("search.k"):
        validate(params)


def test_k_larger_than_the_catalogue_raises_naming_the_param(params):
    from lookalike.params import check_k_fits

    check_k_fits(params, params["search"]["k"])  # equal is fine
    with raises_naming("search.k"):
        check_k_fits(params, params["search"]["k"] - 1)


def test_load_params_refuses_invalid_yaml(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("data: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(path)


def test_load_params_refuses_a_non_mapping(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ParamsError, match="mapping"):
        load_params(path)


def test_load_params_missing_file_raises(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "params.yaml")


def test_preprocess_spec_follows_the_backbone(params):
    spec = preprocess_spec(params)
    assert (spec.image_size, spec.resize_mode, spec.normalisation) == (224, "pad", "lite")
    params["backbone"].update(name="resnet50", resize_mode="stretch", image_size=200)
    spec = preprocess_spec(params)
    assert (spec.image_size, spec.resize_mode, spec.normalisation) == (200, "stretch", "caffe")


def test_image_size_beyond_the_preprocessing_limit_raises(params):
    with raises_naming("backbone.image_size"):
        validate(set_value(params, "backbone.image_size", 2048))


@pytest.mark.parametrize(("dotted", "value"), [("train.instance_views", 1), ("train.instance_rows", 0),
                                               ("train.neighbour_groups", -1), ("train.instance_temperature", 0),
                                               ("train.transductive", "yes")])
def test_instance_training_knobs_are_checked(params, dotted, value):
    with raises_naming(dotted):
        validate(set_value(params, dotted, value))


def test_a_missing_catalogue_description_is_named(params):
    params["data"]["catalogue"] = "catalogues/no-such-catalogue.yaml"
    with raises_naming("data.catalogue"):
        validate(params)


def test_the_query_time_sharpening_reaches_the_manifest_spec_only(params):
    """The features, train and embed stages declare the ``backbone`` section and build their spec from it alone;
    the sharpening threshold reaches only the spec the index stage pins for the searcher."""
    params["search"]["sharpen_queries_below"] = 123.0
    validate(params)
    assert preprocess_spec(params).sharpen_queries_below == 0
    assert query_spec(params).sharpen_queries_below == 123.0
    assert query_spec(params).image_size == preprocess_spec(params).image_size
    del params["search"]["sharpen_queries_below"]
    assert query_spec(params).sharpen_queries_below == 0  # absent: never
