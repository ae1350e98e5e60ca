from mlkit.errors import ConfigError, DataError, MlkitError


def test_data_error_names_every_known_part():
    err = DataError(
        "missing columns",
        path="data/ddi.csv",
        column="disease",
        expected="a column of labels",
        got="nothing",
        hint="check the file",
    )
    assert str(err) == (
        "data/ddi.csv: column 'disease': missing columns; expected a column of labels, "
        "got nothing. check the file"
    )
    assert isinstance(err, MlkitError) and isinstance(err, ValueError)
    assert (err.path, err.column) == ("data/ddi.csv", "disease")


def test_data_error_without_location():
    assert str(DataError("empty")) == "empty"
    assert issubclass(ConfigError, ValueError)


def test_validation_errors_are_one_line_per_field():
    from pydantic import BaseModel, ConfigDict, ValidationError

    from mlkit.errors import describe_validation_error

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")
        seed: int

    try:
        Config.model_validate({"seed": "x", "sedd": 1})
    except ValidationError as exc:
        text = describe_validation_error(exc)
    assert "seed: Input should be a valid integer" in text
    assert "sedd: unknown key" in text
    assert describe_validation_error(KeyError("k")) == "'k'"


def test_validate_config_accepts_models_mappings_and_none():
    import pytest
    from pydantic import BaseModel, ConfigDict

    from mlkit.errors import validate_config

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")
        size: int = 1

    given = Config(size=3)
    assert validate_config(Config, given, what="x", source="s") is given
    assert validate_config(Config, {"size": 2}, what="x", source="s").size == 2
    assert validate_config(Config, None, what="x", source="s").size == 1
    with pytest.raises(ConfigError, match="s: invalid thing: size: "):
        validate_config(Config, {"size": "big"}, what="thing", source="s")
    with pytest.raises(ConfigError, match="expected a mapping, got list"):
        validate_config(Config, [1, 2], what="thing", source="s")
    with pytest.raises(ConfigError, match="expected a mapping, got NoneType"):
        validate_config(Config, None, what="thing", source="s", empty_ok=False)
