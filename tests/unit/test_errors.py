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
