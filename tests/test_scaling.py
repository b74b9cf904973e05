def test_slope_forest_plot_draws_an_interval_that_excludes_its_estimate(tmp_path):
    """A percentile bootstrap interval of a slope over few sizes can lie wholly on one side of the estimate (as in
    the full-val cross-size run): the forest plot draws it rather than failing on negative error bars."""
    import numpy as np

    from harness.metrics import Estimate
    from harness.report_scaling import draw_slopes
    from harness.scaling import TaskScaling

    above = Estimate(0.10, np.linspace(0.12, 0.30, 200), 56)  # interval [0.12, 0.30], estimate 0.10 below it
    assert above.ci[0] > above.value
    s = TaskScaling("cb", {}, {"best prompt": above, "ecological": Estimate(0.0, np.linspace(-0.1, 0.1, 200), 56)},
                    None, [], 4)  # fmt: skip
    path = tmp_path / "slopes.png"
    assert draw_slopes([s], path)
    assert path.stat().st_size > 1000
