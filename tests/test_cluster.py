"""`tc3.prep.clean_batch` and `dedup_keys` under real distributed engines, on the local machine.

Each engine cleans shards of the 500 real records (three copies, so dedup has work); its kept rows must
equal what one `prep.run` keeps. The engines are the `cluster` extra; a missing one skips.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tc3 import prep

SHARDS = 4
KEPT = ["uid", "title", "description", "kind"]  # the columns of a kept record, from either path


@pytest.fixture(scope="module")
def records() -> list[dict]:
    """The real records three times over, with new uids; `pos` is the input position."""
    from conftest import realdata_records

    rows = realdata_records()
    return [{"pos": copy * len(rows) + i, "uid": f"{copy}-{i:07d}", "title": r["title"], "content": r["content"]}
            for copy in range(3) for i, r in enumerate(rows)]


def shards(records: list[dict]) -> list[pa.Table]:
    size = -(-len(records) // SHARDS)
    return [pa.Table.from_pylist(records[i:i + size]) for i in range(0, len(records), size)]


def single_process(records: list[dict], tmp_path: Path, dedup: str) -> list[dict]:
    """What one `prep.run` keeps, all in train, in input order (the KEPT columns)."""
    tmp_path.mkdir(exist_ok=True)
    path = tmp_path / "trn.json"
    path.write_text("".join(json.dumps({k: r[k] for k in ("uid", "title", "content")}) + "\n" for r in records))
    prep.run([path], tmp_path / "out", dedup=dedup, val_fraction=0)
    shard_files = sorted((tmp_path / "out" / "data").glob("train-*.parquet"))
    return pa.concat_tables(pq.read_table(f) for f in shard_files).select(KEPT).to_pylist()


def clean_shard(table: pa.Table) -> pa.Table:
    """One engine task: clean a shard, keep `pos` beside the kept rows (uids are unique here), add the keys."""
    cleaned, _ = prep.clean_batch(table)
    pos = pc.take(table["pos"], pc.index_in(cleaned["uid"], table["uid"]))
    keyed = cleaned.append_column("pos", pos)
    return keyed.append_column("key", prep.dedup_keys(cleaned)["key"])


def global_first(table: pa.Table) -> list[dict]:
    """Global exact dedup of all engines' output: the first row of each key by input position."""
    first = table.group_by("key").aggregate([("pos", "min")])["pos_min"]
    kept = table.filter(pc.is_in(table["pos"], first)).sort_by("pos")
    return kept.select(KEPT).to_pylist()


def test_dask_map_partitions(records: list[dict], tmp_path: Path) -> None:
    dd = pytest.importorskip("dask.dataframe", reason="dask is in the cluster extra")
    import dask

    frame = dd.from_pandas(pa.concat_tables(shards(records)).to_pandas(), npartitions=SHARDS)
    meta = clean_shard(shards(records)[0].slice(0, 0)).to_pandas()
    out = frame.map_partitions(lambda df: clean_shard(pa.Table.from_pandas(df, preserve_index=False)).to_pandas(),
                               meta=meta)
    with dask.config.set(scheduler="processes", num_workers=2):
        result = pa.Table.from_pandas(out.compute(), preserve_index=False)
    assert frame.npartitions == SHARDS
    per_record = result.sort_by("pos").select(KEPT).to_pylist()
    assert per_record == single_process(records, tmp_path / "none", "none")
    # Global dedup across the partitions equals the single run's exact dedup (copies 2 and 3 are dropped).
    deduped = global_first(result)
    assert deduped == single_process(records, tmp_path / "exact", "exact")
    assert len(deduped) < len(per_record) / 2


def test_ray_data_map_batches(records: list[dict], tmp_path: Path) -> None:
    ray = pytest.importorskip("ray", reason="ray is in the cluster extra")
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import the test module
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        ds = ray.data.from_arrow(shards(records)).map_batches(clean_shard, batch_format="pyarrow", batch_size=None)
        result = pa.concat_tables(ray.get(ds.to_arrow_refs()))
    finally:
        ray.shutdown()
    assert result.sort_by("pos").select(KEPT).to_pylist() == \
        single_process(records, tmp_path, "none")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("java") is None, reason="Spark needs Java")
def test_spark_map_in_arrow(records: list[dict], tmp_path: Path) -> None:
    pytest.importorskip("pyspark", reason="pyspark is in the spark extra")
    from pyspark import cloudpickle
    from pyspark.sql import SparkSession

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import the test module

    spark = SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false").getOrCreate()
    try:
        frame = spark.createDataFrame(pa.concat_tables(shards(records)).to_pandas()).repartition(SHARDS, "pos")

        def clean(batches):
            for batch in batches:
                table = clean_shard(pa.Table.from_batches([batch]))
                yield from table.set_column(4, "key", table["key"].cast(pa.binary())).to_batches()

        schema = "uid string, title string, description string, pos long, key binary"
        result = pa.Table.from_pandas(frame.mapInArrow(clean, schema).toPandas(), preserve_index=False)
    finally:
        spark.stop()
    assert result.sort_by("pos").select(KEPT).to_pylist() == \
        single_process(records, tmp_path, "none")
