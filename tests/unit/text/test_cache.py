from __future__ import annotations

import logging

import numpy as np
import pytest

from mlkit.errors import DataError, MlkitError
from mlkit.text import EmbeddingCache, TfidfSvdEncoder, text_sha256

IDS = ["d:1", "d:2", "d:3", "d:4", "d:5"]
TEXTS = ["red itchy rash", "", "   ", "dark mole on back", "red itchy rash"]


def shards(directory):
    return sorted(directory.rglob("part-*.parquet"))


def test_blank_text_gives_zero_vector_and_is_never_encoded(tmp_path, counting_encoder):
    encoder = counting_encoder()
    emb, has_text = EmbeddingCache(tmp_path).embed(encoder, IDS, TEXTS)

    assert emb.dtype == np.float32 and emb.shape == (5, 4)
    assert has_text.dtype == bool
    assert has_text.tolist() == [True, False, False, True, True]
    assert not emb[1].any() and not emb[2].any()
    assert "" not in encoder.encoded and "   " not in encoder.encoded
    np.testing.assert_array_equal(emb[0], encoder.vector("red itchy rash"))
    np.testing.assert_array_equal(emb[3], encoder.vector("dark mole on back"))


def test_none_and_nan_texts_count_as_no_text(tmp_path, counting_encoder):
    encoder = counting_encoder()
    emb, has_text = EmbeddingCache(tmp_path).embed(
        encoder, ["a", "b", "c"], [None, float("nan"), "papule"]
    )
    assert has_text.tolist() == [False, False, True]
    assert not emb[:2].any()
    assert encoder.encoded == ["papule"]


def test_each_distinct_text_is_encoded_once(tmp_path, counting_encoder):
    encoder = counting_encoder()
    EmbeddingCache(tmp_path).embed(encoder, IDS, TEXTS)
    assert sorted(encoder.encoded) == ["dark mole on back", "red itchy rash"]


def test_rerun_recomputes_nothing(tmp_path, counting_encoder):
    first_encoder = counting_encoder()
    first, first_has = EmbeddingCache(tmp_path).embed(first_encoder, IDS, TEXTS)
    assert first_encoder.calls

    # A new cache object and a new encoder: only the files carry over.
    rerun_encoder = counting_encoder()
    again, again_has = EmbeddingCache(tmp_path).embed(rerun_encoder, IDS, TEXTS)

    assert rerun_encoder.calls == []
    np.testing.assert_array_equal(again, first)
    np.testing.assert_array_equal(again_has, first_has)


def test_same_cache_object_reuses_entries_in_any_order(tmp_path, counting_encoder):
    encoder = counting_encoder()
    cache = EmbeddingCache(tmp_path)
    first, _ = cache.embed(encoder, IDS, TEXTS)
    encoder.calls.clear()

    emb, _ = cache.embed(encoder, IDS[::-1], TEXTS[::-1])

    assert encoder.calls == []
    np.testing.assert_array_equal(emb, first[::-1])


def test_changed_text_is_recomputed_alone(tmp_path, counting_encoder):
    EmbeddingCache(tmp_path).embed(counting_encoder(), IDS, TEXTS)
    changed = list(TEXTS)
    changed[3] = "dark mole on back, growing"

    encoder = counting_encoder()
    emb, _ = EmbeddingCache(tmp_path).embed(encoder, IDS, changed)

    assert encoder.encoded == ["dark mole on back, growing"]
    np.testing.assert_array_equal(emb[3], encoder.vector(changed[3]))


def test_entries_are_per_sample_id(tmp_path, counting_encoder):
    EmbeddingCache(tmp_path).embed(counting_encoder(), ["d:1"], ["red itchy rash"])
    encoder = counting_encoder()
    EmbeddingCache(tmp_path).embed(encoder, ["d:9"], ["red itchy rash"])
    assert encoder.encoded == ["red itchy rash"]


def test_different_encoders_never_share_entries(tmp_path, counting_encoder):
    cache = EmbeddingCache(tmp_path)
    first, _ = cache.embed(counting_encoder("a"), IDS, TEXTS)

    other = counting_encoder("b")
    second, _ = cache.embed(other, IDS, TEXTS)

    assert sorted(other.encoded) == ["dark mole on back", "red itchy rash"]
    assert not np.array_equal(first[0], second[0])
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 2


def test_files_are_parquet_and_json_without_leftovers(tmp_path, counting_encoder):
    EmbeddingCache(tmp_path).embed(counting_encoder(), IDS, TEXTS)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} == {".parquet", ".json"}
    assert not any(p.name.startswith(".") for p in files)


def test_shard_records_sample_id_and_text_hash(tmp_path, counting_encoder):
    import pyarrow.parquet as pq

    EmbeddingCache(tmp_path).embed(counting_encoder(), ["d:1"], ["red itchy rash"])
    (shard,) = shards(tmp_path)
    table = pq.read_table(shard).to_pydict()
    assert table["sample_id"] == ["d:1"]
    assert table["text_sha256"] == [text_sha256("red itchy rash")]


def test_interrupted_run_keeps_finished_chunks(tmp_path, counting_encoder):
    class FailsOnSecondChunk(counting_encoder):
        def encode(self, texts):
            if len(self.calls) == 1:
                raise RuntimeError("killed")
            return super().encode(texts)

    texts = ["t1", "t2", "t3", "t4"]
    ids = ["a", "b", "c", "d"]
    with pytest.raises(RuntimeError, match="killed"):
        EmbeddingCache(tmp_path, chunk_size=2).embed(FailsOnSecondChunk(), ids, texts)
    assert len(shards(tmp_path)) == 1

    encoder = counting_encoder()
    EmbeddingCache(tmp_path, chunk_size=2).embed(encoder, ids, texts)
    assert encoder.encoded == ["t3", "t4"]


def test_damaged_shard_is_skipped_and_recomputed(tmp_path, counting_encoder, caplog):
    EmbeddingCache(tmp_path).embed(counting_encoder(), IDS, TEXTS)
    (shard,) = shards(tmp_path)
    shard.write_bytes(b"not parquet")

    encoder = counting_encoder()
    with caplog.at_level(logging.WARNING, logger="mlkit.text.cache"):
        emb, _ = EmbeddingCache(tmp_path).embed(encoder, IDS, TEXTS)

    assert "damaged" in caplog.text and shard.name in caplog.text
    assert sorted(encoder.encoded) == ["dark mole on back", "red itchy rash"]
    np.testing.assert_array_equal(emb[0], encoder.vector("red itchy rash"))


def test_folder_of_another_encoder_is_refused(tmp_path, counting_encoder):
    EmbeddingCache(tmp_path).embed(counting_encoder(dim=4), ["a"], ["x"])
    with pytest.raises(DataError, match="another encoder"):
        # Same id, different dim: the folder's encoder.json disagrees.
        EmbeddingCache(tmp_path).embed(counting_encoder(dim=3), ["a"], ["x"])


def test_all_cached_or_empty_calls_do_not_encode(tmp_path, counting_encoder):
    encoder = counting_encoder()
    emb, has_text = EmbeddingCache(tmp_path).embed(encoder, [], [])
    assert emb.shape == (0, 4) and has_text.shape == (0,)
    emb, has_text = EmbeddingCache(tmp_path).embed(encoder, ["a"], [""])
    assert encoder.calls == [] and not has_text.any() and not emb.any()


def test_wrong_lengths_and_types_are_refused(tmp_path, counting_encoder):
    cache = EmbeddingCache(tmp_path)
    with pytest.raises(DataError, match="differ in length"):
        cache.embed(counting_encoder(), ["a", "b"], ["x"])
    with pytest.raises(DataError, match="sample 'a'.*not a string"):
        cache.embed(counting_encoder(), ["a"], [3])
    with pytest.raises(DataError, match="sample id at position 1"):
        cache.embed(counting_encoder(), ["a", None], ["x", "y"])
    with pytest.raises(MlkitError, match="chunk_size"):
        EmbeddingCache(tmp_path, chunk_size=0)


def test_encoder_returning_wrong_shape_is_reported(tmp_path, counting_encoder):
    class Short(counting_encoder):
        def encode(self, texts):
            return super().encode(texts)[:, :2]

    with pytest.raises(MlkitError, match=r"counting:a.*shape \(1, 2\)"):
        EmbeddingCache(tmp_path).embed(Short(), ["a"], ["x"])


def test_works_with_the_tfidf_encoder(tmp_path):
    texts = ["red scaly plaque", "itchy red rash", "dark irregular mole", ""]
    encoder = TfidfSvdEncoder(dim=2).fit(texts)
    emb, has_text = EmbeddingCache(tmp_path).embed(encoder, list("abcd"), texts)
    np.testing.assert_array_equal(emb[:3], encoder.encode(texts[:3]))
    assert has_text.tolist() == [True, True, True, False]
