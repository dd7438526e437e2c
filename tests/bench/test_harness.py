"""The shared benchmark harness: seeded configs, CSV in and out, markdown tables, mean curves, plots."""

import pytest

from ol_ray.bench.harness import mean_curve, read_csv, seeded, write_csv, write_results
from ol_ray.config import Config
from ol_ray.observe.plots import Panel, cell, markdown_table, plot_panels


def test_a_seed_seeds_the_stream_order_the_head_and_the_selection():
    cfg = seeded(Config(), 7)
    assert (cfg.stream.shuffle_seed, cfg.model.seed, cfg.selection.seed) == (7, 7, 7)


def test_csv_round_trip_keeps_numbers_and_missing_cells(tmp_path):
    rows = [{"name": "a", "count": 3, "share": 0.25}, {"name": "b", "count": 4, "extra": "x"}]
    write_csv(str(tmp_path / "rows.csv"), rows)
    back = read_csv(str(tmp_path / "rows.csv"))
    assert back[0] == {"name": "a", "count": 3, "share": 0.25, "extra": ""}
    assert back[1]["count"] == 4 and back[1]["share"] == ""


def test_results_table_rounds_floats_and_writes_both_files(tmp_path):
    table = write_results([{"side": "plain", "ratio": 1.0}, {"side": "pipeline", "ratio": 0.87654}],
                          str(tmp_path), "t")
    assert table.splitlines() == ["| side | ratio |", "|---|---|", "| plain | 1 |", "| pipeline | 0.877 |"]
    assert (tmp_path / "t.md").read_text().strip() == table and read_csv(str(tmp_path / "t.csv"))[1]["ratio"] == 0.87654
    assert markdown_table([{"a": 1}, {"b": 2}]).splitlines()[2:] == ["| 1 |  |", "|  | 2 |"]
    assert [cell(v) for v in (3200.0, 0.000123, float("nan"), 2.5e12, "x")] == ["3,200", "0.000123", "nan",
                                                                                   "2.5e+12", "x"]


def test_mean_curve_averages_seeds_point_by_point_up_to_the_shortest():
    runs = [[{"x": 0, "y": 0.5}, {"x": 10, "y": 0.7}, {"x": 20, "y": 0.9}], [{"x": 0, "y": 0.7}, {"x": 12, "y": 0.8}]]
    x, y = mean_curve(runs, "x", "y")
    assert list(x) == [0, 11] and list(y) == pytest.approx([0.6, 0.75])


def test_plot_panels_draws_lines_steps_and_bars_into_one_png(tmp_path):
    panels = [Panel("x", "y").add("a", [0, 1], [1, 2]),
              Panel("x", "B", step=True, log_y=True).add("b", [0, 1], [8, 16]),
              Panel("label", "share", kind="bar").add("stream", [0, 1], [0.5, 0.5]).add("chosen", [0, 1], [0.3, 0.7])]
    path = plot_panels(panels, str(tmp_path / "p.png"), "title", columns=2)
    with open(path, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
