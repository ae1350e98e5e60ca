from __future__ import annotations

import logging
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFile

from mlkit.data.images import ALLOWED_FORMATS, validate_images
from mlkit.data.schema import QUARANTINE_COLUMNS, STRING
from mlkit.errors import ConfigError, DataError


def noise(size: int = 48, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), np.uint8)
    return Image.fromarray(pixels)


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` but holds almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A data root with one file of every kind validate_images tells apart."""
    root = tmp_path / "root"
    images = root / "images"
    images.mkdir(parents=True)
    noise(seed=1).save(images / "ok.jpg", "JPEG", quality=95)
    noise(seed=2).save(images / "ok.png", "PNG")
    noise(seed=3).save(images / "ok.webp", "WEBP")
    noise(seed=4).save(images / "ok.gif", "GIF")
    noise(seed=5).save(images / "ok.bmp", "BMP")
    noise(size=100, seed=6).save(images / "big.png", "PNG")

    whole = (images / "ok.jpg").read_bytes()
    (images / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    random_bytes = np.random.default_rng(7).integers(0, 256, 4096, np.uint8)
    (images / "random.jpg").write_bytes(random_bytes.tobytes())
    # 100 million pixels: above PIL's warning threshold, below its hard limit.
    (images / "bomb.png").write_bytes(png_header(10_000, 10_000))
    # 10 billion pixels: PIL itself refuses to open it.
    (images / "huge.png").write_bytes(png_header(100_000, 100_000))
    (images / "folder.jpg").mkdir()

    noise(seed=8).save(tmp_path / "outside.jpg", "JPEG")
    return root


def make_frame(paths: list[str | None]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "sample_id": [f"demo:{i}" for i in range(len(paths))],
            "dataset": "demo",
            "image_path": pd.array(paths, dtype=STRING),
            "label": "x",
        }
    )


def reasons(quarantine: pd.DataFrame) -> dict[str, str]:
    return dict(zip(quarantine["source_file"], quarantine["reason"], strict=True))


def test_full_mode_finds_every_kind_of_bad_image(root: Path) -> None:
    frame = make_frame(
        [
            "images/ok.jpg",
            "images/truncated.jpg",
            "images/ok.png",
            "images/random.jpg",
            "images/ok.gif",
            "images/ok.bmp",
            "images/absent.jpg",
            "images/bomb.png",
            "images/huge.png",
            "images/ok.webp",
            "images/folder.jpg",
        ]
    )

    kept, quarantine = validate_images(frame, root, workers=4)

    assert kept["image_path"].tolist() == [
        "images/ok.jpg",
        "images/ok.png",
        "images/ok.webp",
    ]
    assert reasons(quarantine) == {
        "images/truncated.jpg": "truncated_image",
        "images/random.jpg": "unreadable_image",
        "images/ok.gif": "unsupported_format",
        "images/ok.bmp": "unsupported_format",
        "images/absent.jpg": "missing_image",
        "images/bomb.png": "image_too_large",
        "images/huge.png": "image_too_large",
        "images/folder.jpg": "unreadable_image",
    }
    # Quarantine rows follow the input order.
    assert quarantine["sample_id"].tolist() == [
        "demo:1",
        "demo:3",
        "demo:4",
        "demo:5",
        "demo:6",
        "demo:7",
        "demo:8",
        "demo:10",
    ]


def test_quarantine_has_the_standard_columns(root: Path) -> None:
    frame = make_frame(["images/absent.jpg", "images/ok.png"])

    _, quarantine = validate_images(frame, root)

    assert list(quarantine.columns) == list(QUARANTINE_COLUMNS)
    assert quarantine.dtypes.astype(str).tolist() == [
        str(d) for d in QUARANTINE_COLUMNS.values()
    ]
    row = quarantine.iloc[0]
    assert (row["dataset"], row["sample_id"]) == ("demo", "demo:0")
    assert pd.isna(row["line"])
    assert row["detail"]


def test_max_pixels_is_checked_from_the_header(root: Path) -> None:
    frame = make_frame(["images/big.png", "images/ok.png"])

    for mode in ("full", "header"):
        kept, quarantine = validate_images(frame, root, mode=mode, max_pixels=5_000)

        assert kept["image_path"].tolist() == ["images/ok.png"]
        assert reasons(quarantine) == {"images/big.png": "image_too_large"}
        assert "100x100" in quarantine["detail"].iloc[0]


def test_header_mode_skips_decoding(root: Path) -> None:
    frame = make_frame(["images/truncated.jpg", "images/ok.gif", "images/ok.jpg"])

    kept, quarantine = validate_images(frame, root, mode="header")

    # A truncated file has a valid header; only full mode decodes the pixels.
    assert kept["image_path"].tolist() == ["images/truncated.jpg", "images/ok.jpg"]
    assert reasons(quarantine) == {"images/ok.gif": "unsupported_format"}


def test_none_mode_keeps_everything(root: Path) -> None:
    frame = make_frame(["images/absent.jpg", "../outside.jpg"])

    kept, quarantine = validate_images(frame, root / "no-such-root", mode="none")

    pd.testing.assert_frame_equal(kept, frame)
    assert quarantine.empty
    assert list(quarantine.columns) == list(QUARANTINE_COLUMNS)


@pytest.mark.parametrize(
    ("path", "detail"),
    [
        ("../outside.jpg", "outside the data root"),
        ("images/../../outside.jpg", "outside the data root"),
        ("..", "outside the data root"),
        ("ABSOLUTE", "absolute"),
        ("C:/outside.jpg", "absolute"),
    ],
)
def test_paths_that_escape_the_root_are_refused(
    root: Path, path: str, detail: str
) -> None:
    if path == "ABSOLUTE":
        path = str(root.parent / "outside.jpg")
    frame = make_frame([path])

    kept, quarantine = validate_images(frame, root)

    assert kept.empty
    assert reasons(quarantine) == {path: "unreadable_image"}
    assert detail in quarantine["detail"].iloc[0]


def test_dot_dot_that_stays_inside_the_root_is_allowed(root: Path) -> None:
    frame = make_frame(["images/../images/ok.jpg"])

    kept, _ = validate_images(frame, root)

    assert len(kept) == 1


def test_symlink_inside_the_root_is_followed(root: Path) -> None:
    (root / "linked.jpg").symlink_to(root.parent / "outside.jpg")
    frame = make_frame(["linked.jpg"])

    kept, _ = validate_images(frame, root)

    assert len(kept) == 1


def test_null_and_empty_paths_are_missing_images(root: Path) -> None:
    frame = make_frame([None, "", "images/ok.jpg"])

    kept, quarantine = validate_images(frame, root)

    assert kept["sample_id"].tolist() == ["demo:2"]
    assert quarantine["reason"].tolist() == ["missing_image", "missing_image"]
    assert quarantine["sample_id"].tolist() == ["demo:0", "demo:1"]


def test_rows_sharing_a_bad_path_are_all_quarantined(root: Path) -> None:
    frame = make_frame(["images/random.jpg", "images/ok.jpg", "images/random.jpg"])

    kept, quarantine = validate_images(frame, root)

    assert kept["sample_id"].tolist() == ["demo:1"]
    assert quarantine["sample_id"].tolist() == ["demo:0", "demo:2"]


def test_kept_rows_keep_index_columns_and_order(root: Path) -> None:
    frame = make_frame(["images/ok.png", "images/absent.jpg", "images/ok.jpg"])
    frame.index = [10, 20, 30]

    kept, _ = validate_images(frame, root)

    pd.testing.assert_frame_equal(kept, frame.loc[[10, 30]])


def test_result_does_not_depend_on_worker_count(root: Path) -> None:
    names = sorted(p.name for p in (root / "images").iterdir()) * 3
    frame = make_frame([f"images/{name}" for name in names])

    one = validate_images(frame, root, workers=1)
    many = validate_images(frame, root, workers=8)

    pd.testing.assert_frame_equal(one[0], many[0])
    pd.testing.assert_frame_equal(one[1], many[1])


def test_mpo_from_a_phone_camera_is_accepted(root: Path) -> None:
    first, second = noise(seed=9), noise(seed=10)
    first.save(root / "phone.jpg", "MPO", save_all=True, append_images=[second])
    with Image.open(root / "phone.jpg") as image:
        assert image.format == "MPO"
    frame = make_frame(["phone.jpg"])

    kept, _ = validate_images(frame, root)

    assert len(kept) == 1
    assert "MPO" in ALLOWED_FORMATS


def test_global_pil_settings_and_warning_filters_are_untouched(root: Path) -> None:
    frame = make_frame(["images/bomb.png", "images/truncated.jpg"])
    max_pixels = Image.MAX_IMAGE_PIXELS
    filters = list(warnings.filters)

    validate_images(frame, root)

    assert max_pixels == Image.MAX_IMAGE_PIXELS
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    assert warnings.filters == filters
    # With the run over, PIL's own decompression-bomb warning is active again.
    with pytest.warns(Image.DecompressionBombWarning):
        Image.open(root / "images" / "bomb.png").close()


def test_logs_one_info_line_with_counts_per_reason(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    frame = make_frame(["images/ok.jpg", "images/absent.jpg", "images/ok.gif"])

    with caplog.at_level(logging.INFO, logger="mlkit.data.images"):
        validate_images(frame, root)

    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "kept 1, quarantined 2" in message
    assert "'missing_image': 1" in message
    assert "'unsupported_format': 1" in message


def test_progress_bar_goes_to_stderr(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frame = make_frame(["images/ok.jpg", "images/ok.png"])

    validate_images(frame, root, progress=True)

    assert "checking images" in capsys.readouterr().err


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "pixels"},
        {"max_pixels": 0},
        {"max_pixels": 1.5},
        {"workers": 0},
    ],
)
def test_bad_parameters_raise_config_error(root: Path, kwargs: dict) -> None:
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        validate_images(make_frame(["images/ok.jpg"]), root, **kwargs)


def test_bad_inputs_raise_data_error(root: Path) -> None:
    frame = make_frame(["images/ok.jpg"])

    with pytest.raises(DataError, match="image_path"):
        validate_images(frame.drop(columns=["image_path"]), root)
    with pytest.raises(DataError, match="not a directory"):
        validate_images(frame, root / "no-such-root")
