"""prepare on a real dask.distributed LocalCluster gives what the local run gives."""

from __future__ import annotations

import pytest

from flows.prepare import prepare
from tests.conftest import write_jsonl
from tests.unit.test_shards import records

pytestmark = [pytest.mark.flow, pytest.mark.dask]


def test_local_cluster_of_two_worker_processes_gives_the_local_outputs(prefect_server, tmp_path):
    from dask.distributed import LocalCluster
    from prefect_dask import DaskTaskRunner

    sources = [str(write_jsonl(tmp_path / "a.jsonl", records()))]
    local = prepare(sources, out_dir=str(tmp_path / "local"), overrides={"work_dir": str(tmp_path / "w1"), "shard_mb": 4000 / 2**20})
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        on_dask = prepare.with_options(task_runner=DaskTaskRunner(address=cluster.scheduler_address))(
            sources, out_dir=str(tmp_path / "dask"), overrides={"work_dir": str(tmp_path / "w2"), "shard_mb": 4000 / 2**20})
    assert on_dask["shards"]["total"] == local["shards"]["total"] > 4
    for key in ("dataset_sha256", "records_read", "examples_written", "rejected", "duplicates_removed", "tokens"):
        assert on_dask[key] == local[key], key
    written = on_dask["examples_written"]
    assert on_dask["records_read"] == (written["train"] + written["validation"] + sum(on_dask["rejected"].values())
                                       + on_dask["duplicates_removed"])
    for name in ("train.jsonl", "validation.jsonl"):
        assert (tmp_path / "dask" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
