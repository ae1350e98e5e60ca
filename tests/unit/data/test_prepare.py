import pytest

from mlkit.data.prepare import PrepareConfig, parse_config, standardize
from mlkit.errors import ConfigError, DataError


def test_defaults_read_every_source(tmp_path):
    config = parse_config({"data_root": tmp_path, "out_dir": tmp_path / "out"})
    assert config.sources[-1] == "skincap" and "derm1m" in config.sources
    assert config.split_fractions == (0.7, 0.15, 0.15)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("sources", ["ddi", "imagenet"], "unknown source.*imagenet"),
        ("sources", ["skincap"], "at least one dataset"),
        ("leakage_rules", ["label_mention", "vibes"], "unknown leakage rule.*vibes"),
        ("min_samples_per_label", 0, "greater than or equal to 1"),
        ("image_check", "thorough", "full"),
        ("colour", "red", "colour"),
    ],
)
def test_bad_values_are_named(tmp_path, field, value, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({"data_root": tmp_path, "out_dir": tmp_path, field: value})


def test_duplicate_sources_collapse(tmp_path):
    config = parse_config(
        {"data_root": tmp_path, "out_dir": tmp_path, "sources": ["ddi", "ddi", "isic"]}
    )
    assert config.sources == ["ddi", "isic"]


def test_from_yaml_with_overrides(tmp_path):
    path = tmp_path / "prepare.yaml"
    path.write_text(f"data_root: {tmp_path}\nout_dir: {tmp_path}\nseed: 1\n")
    assert PrepareConfig.from_yaml(path, seed=9, image_check=None).seed == 9
    with pytest.raises(ConfigError, match="config file not found"):
        PrepareConfig.from_yaml(tmp_path / "missing.yaml")
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        PrepareConfig.from_yaml(path)


def test_standardize_checks_root_and_options(tmp_path):
    with pytest.raises(DataError, match="data root is not a directory"):
        standardize(tmp_path / "nowhere", ["ddi"])
    with pytest.raises(ConfigError, match="source_options for unknown source"):
        standardize(tmp_path, ["ddi"], {"imagenet": {}})
