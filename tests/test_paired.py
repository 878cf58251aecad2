"""Paired comparisons against the reference run of the same seed (simulator/analysis/paired.py)."""

from __future__ import annotations

from conftest import tiny

from simulator.analysis.paired import grid_points, main, paired_differences, paired_runs

SMALL = {"population.users.count": 150, "population.creators.count": 12, "population.goods.initial": 40, "ticks": 4}


def test_a_point_equal_to_its_reference_differs_by_exactly_zero_and_others_do_not():
    scenario = tiny({**SMALL, "allocation.rule": "learned", "privacy.mechanism": "randomized_response",
                     "sweep": {"grid": {"privacy.epsilon": [0.1, "inf"]}}})
    assert grid_points(scenario) == [{"privacy.epsilon": 0.1}, {"privacy.epsilon": "inf"}]
    runs = paired_runs(scenario, {"privacy.mechanism": "none"}, seeds=[1, 2])
    assert len(runs) == 4 and list(runs["seed"]) == [1, 2, 1, 2]
    table = paired_differences(runs, ["consumptions_total", "user_welfare"])
    exact = table[table["point"].str.contains("inf")]
    assert (exact["difference"] == 0).all() and (exact["low"] == 0).all()
    noisy = table[table["point"].str.contains("0.1") & (table["metric"] == "consumptions_total")]
    assert (noisy["difference"] != 0).all()


def test_the_command_prints_a_table_and_refuses_bad_input(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text("ticks: 3\npopulation: {users: {count: 120}, creators: {count: 10}, goods: {initial: 30}}\n"
                    "sweep: {grid: {adversaries.bots.share: [0.2]}}\n")
    assert main([str(path), "--reference", "adversaries.bots.share=0", "--seeds", "1", "--metric", "ad_clicks_total"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| point | metric |") and "ad_clicks_total" in out
    assert main([str(path), "--set", "privacy.epsilon=0"]) == 2
    assert "privacy.epsilon" in capsys.readouterr().err
