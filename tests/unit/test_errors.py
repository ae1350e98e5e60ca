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
