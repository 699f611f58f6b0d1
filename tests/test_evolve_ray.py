"""dreamteam evolve --executor ray, on a local Ray instance (skipped where Ray is not installed: pip install 'dreamteam[ray]')."""

import json

import pytest

ray = pytest.importorskip("ray")

from dreamteam import evolve  # noqa: E402
from loop_helpers import VOCAB, small_data  # noqa: E402


@pytest.mark.slow
def test_a_generation_evaluated_on_a_local_ray_instance(tmp_path):
    data_dir = small_data(tmp_path / "data")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(evolve.harness.PROJECT_ROOT)}})
    try:
        table = evolve.evolve(tmp_path / "run", 1, 2, executor="ray", data_dir=data_dir, max_iters=20, val_windows=4,
                              model_options={"vocab_size": VOCAB}, log=lambda *_: None)
    finally:
        ray.shutdown()
    for e in json.loads((tmp_path / "run" / "gen_000" / "population.json").read_text()):
        m = json.loads((tmp_path / "run" / "gen_000" / e["id"] / "metrics.json").read_text())
        assert m["status"] == "ok" and m["valid"]
    assert table.read_text().count("| ok |") == 2

