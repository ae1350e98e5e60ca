import numpy as np
import pytest
import torch
from PIL import Image

from mlkit.train.dataset import ManifestDataset, load_images


@pytest.fixture
def images(tmp_path):
    paths = []
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        Image.new("RGB", (10, 6), colour).save(tmp_path / f"{i}.png")
        paths.append(f"{i}.png")
    return tmp_path, paths


def to_tensor(image):
    return torch.tensor(np.asarray(image, dtype=np.float32)).permute(2, 0, 1)


def test_items_follow_the_batch_contract(images):
    root, paths = images
    text = np.arange(6, dtype=np.float32).reshape(3, 2)
    ds = ManifestDataset(root, paths, text, [True, False, True], [2, 0, 1], to_tensor)
    item = ds[1]
    assert set(item) == {"image", "text", "has_text", "target"}
    assert item["image"].shape == (3, 6, 10)
    assert item["image"][1].max() == 255  # the green image
    assert item["text"].tolist() == [2.0, 3.0]
    assert item["has_text"].item() is False and item["target"].item() == 0
    assert len(ds) == 3


def test_preloaded_and_lazy_images_agree(images):
    root, paths = images
    args = (root, paths, np.zeros((3, 1)), np.zeros(3, bool), np.zeros(3), to_tensor)
    eager = ManifestDataset(*args, preload=True)
    lazy = ManifestDataset(*args, preload=False)
    given = ManifestDataset(*args, images=load_images(root, paths))
    assert lazy.images is None and len(eager.images) == 3
    for i in range(3):
        assert torch.equal(eager[i]["image"], lazy[i]["image"])
        assert torch.equal(given[i]["image"], lazy[i]["image"])


def test_inputs_must_have_one_row_per_image(images):
    root, paths = images
    with pytest.raises(ValueError, match="lengths differ"):
        ManifestDataset(
            root, paths, np.zeros((2, 1)), np.zeros(3), np.zeros(3), to_tensor
        )
    with pytest.raises(ValueError, match="decoded images for 3 rows"):
        ManifestDataset(
            root,
            paths,
            np.zeros((3, 1)),
            np.zeros(3),
            np.zeros(3),
            to_tensor,
            images=[],
        )
