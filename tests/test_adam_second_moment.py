"""benchmarks/adam_second_moment.py: Adam's second moment on the embedding rows, by training count."""


import numpy as np
from script_helpers import benchmark_script


def test_rows_of_unseen_ids_carry_a_far_smaller_second_moment_than_frequent_ones(short_val_data, capsys):
    """The softmax's push on an id that no target ever is is a small gradient; a frequent id's row also gets
    the gradients of its own targets and inputs. After a few steps of the baseline the rows' sqrt(v) must be
    ordered that way by orders of magnitude, and every row must have been updated (v > 0)."""
    module = benchmark_script("adam_second_moment")

    from dreamteam import data, registry

    train = data.load(short_val_data).train
    rows, others = module.second_moments(registry.get("baseline"), train, iters=3, seed=0)
    counts = data.token_counts(train)
    assert rows.shape == (counts.size,) and (rows > 0).all()
    assert rows[counts == 0].mean() * 100 < rows[counts >= 100].mean()
    assert np.isfinite(others) and others > rows[counts == 0].mean()
    assert module.main(["--persona", "nobody", "--data-dir", str(short_val_data)]) == 2
    assert "unknown persona 'nobody'" in capsys.readouterr().err
