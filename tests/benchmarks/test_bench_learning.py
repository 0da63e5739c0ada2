"""The learning panel's bookkeeping (benchmarks/bench_learning.py): run order, resume, and the panel mean.

The benchmark itself trains for hours; these tests check the arithmetic that turns its CSV rows into the README's
tables, so a number there is what the rows say.
"""

from __future__ import annotations

import importlib.util
import statistics
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_learning", REPO / "benchmarks" / "bench_learning.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_learning"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("bench_learning", None)


def _row(dataset, row, seed, ap, **extra):
    return dict(dataset=dataset, row=row, seed=str(seed), AP=str(ap), AP50=str(ap + 0.2), train_s="100",
                s_per_epoch="3.3", **extra)


def test_run_order_interleaves_frameworks_seed_by_seed(bench):
    order = bench.run_order(["raccoon", "cards"], ["cspdet_small_scratch", "ultralytics_yolo26n",
                                                   "cspdet_yolo26n_layout"], [0, 1])
    assert order[:4] == [("raccoon", "cspdet_small_scratch", 0), ("raccoon", "ultralytics_yolo26n", 0),
                         ("cards", "cspdet_small_scratch", 0), ("cards", "ultralytics_yolo26n", 0)]
    assert order[4:8] == [(d, r, 1) for d in ("raccoon", "cards") for r in ("cspdet_small_scratch",
                                                                            "ultralytics_yolo26n")]
    # single-seed rows run once, at seed 0, after the multi-seed rows
    assert order[8:] == [("raccoon", "cspdet_yolo26n_layout", 0), ("cards", "cspdet_yolo26n_layout", 0)]


def test_panel_mean_is_mean_over_datasets_then_over_seeds(bench):
    aps = {0: [0.2, 0.4, 0.6, 0.8], 1: [0.3, 0.5, 0.7, 0.9]}
    results = [_row(d, "cspdet_small_scratch", s, ap) for s, vals in aps.items() for d, ap in zip(bench.PANEL, vals)]
    results.append(_row("raccoon", "cspdet_small_scratch", 2, 0.99))  # seed 2 incomplete: does not count
    results.append(_row("coco128", "cspdet_small_scratch", 0, 0.01))  # diagnostic: outside the panel mean
    means = bench.panel_means(results, "cspdet_small_scratch", "AP")
    assert means == pytest.approx([0.5, 0.6])
    table = bench.panel_table(results)
    assert f"| cspdet_small_scratch | 2 | 0.550 +- {statistics.stdev([0.5, 0.6]):.3f} |" in table


def test_resume_reads_pre_panel_csv_as_raccoon(bench, tmp_path):
    old = tmp_path / "results.csv"
    old.write_text("row,seed,AP,AP50,AP_nms,AP50_nms,train_s,s_per_epoch,epochs,run_dir\n"
                   "cspdet_small_scratch,0,0.25,0.6,0.28,0.65,900,30,30,x\n")
    rows = bench.load_results(old)
    assert rows[0]["dataset"] == "raccoon"
    # written back with the panel's columns, nothing lost that the panel keeps
    text = bench._csv_text(rows)
    assert text.splitlines()[0].startswith("dataset,row,seed,AP,AP50,APs")
    assert text.splitlines()[1].startswith("raccoon,cspdet_small_scratch,0,0.25,0.6")


def test_dataset_table_has_both_paths_sizes_and_time(bench):
    results = [_row("thermal", "cspdet_small_scratch", 0, 0.4, nms_AP="0.4", nms_AP50="0.6", o2o_AP="0.33",
                    o2o_AP50="0.5", APs="0.1", APm="0.3", APl="0.5", test_AP="0.35"),
               _row("thermal", "ultralytics_yolo26n", 0, 0.38)]
    table = bench.dataset_table(results, "thermal")
    # one seed: its value, no spread
    assert "| cspdet_small_scratch | 0 | 0.400 | 0.600 | 0.400 | 0.600 | 0.330 | 0.500 |" in table
    assert "0.100 / 0.300 / 0.500" in table and "| 0.350 |" in table
    assert "| ultralytics_yolo26n | 0 | 0.380 | 0.580 | - |" in table


def test_panel_descriptors_exist_and_name_their_splits(bench):
    import yaml

    for dataset in (*bench.PANEL, *bench.DIAGNOSTIC):
        desc = yaml.safe_load(bench.descriptor(dataset).read_text())
        assert desc["format"] == "coco" and "train" in desc and "val" in desc, dataset
    assert "test" in yaml.safe_load(bench.descriptor("thermal").read_text())


def test_acceptance_table_compares_with_the_better_reference_on_shared_seeds(bench):
    """small_scratch against the better of YOLO11n / YOLO26n: AP difference, time ratio and the worst dataset,
    computed on the seeds every row has on the whole panel (hand-computed numbers)."""
    ours = {"raccoon": 0.30, "cards": 0.40, "microcontroller": 0.70, "thermal": 0.50}
    y11 = {"raccoon": 0.25, "cards": 0.45, "microcontroller": 0.60, "thermal": 0.40}
    y26 = {"raccoon": 0.10, "cards": 0.30, "microcontroller": 0.50, "thermal": 0.30}
    results = [dict(_row(d, "cspdet_small_scratch", 0, ap, nms_AP=str(ap + 0.01)), train_s="70")
               for d, ap in ours.items()]
    results += [dict(_row(d, "ultralytics_yolo11n", 0, ap), train_s="100") for d, ap in y11.items()]
    results += [_row(d, "ultralytics_yolo26n", 0, ap) for d, ap in y26.items()]
    results.append(_row("raccoon", "cspdet_small_scratch", 1, 0.9))  # seed 1 only here: not compared
    table = bench.acceptance_table(results)
    # panel AP 0.475 vs YOLO11n 0.425: +0.050; time 70 / 100; worst dataset cards -0.050
    assert ("| cspdet_small_scratch | 0 | 0.475 | 0.485 | - | ultralytics_yolo11n (0.425) | +0.050 (met) | "
            "0.70 (met) | -0.050 cards (not met) |") in table
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| row |")]
    assert len(rows) == 1  # the reference rows are not candidates


def test_acceptance_table_adds_every_seed_of_each_row_when_the_references_have_fewer(bench):
    """small_scratch on seeds 0-2, the references on seed 0 only: the shared-seed line, then small_scratch's mean
    over its three seeds against each reference's own seeds (hand-computed)."""
    results = []
    for seed, ours in enumerate((0.50, 0.40, 0.30)):   # per seed the same AP on every dataset
        results += [dict(_row(d, "cspdet_small_scratch", seed, ours), train_s=str(60 + 10 * seed))
                    for d in bench.PANEL]
    results += [_row(d, "ultralytics_yolo11n", 0, 0.35) for d in bench.PANEL]   # train_s 100
    results += [_row(d, "ultralytics_yolo26n", 0, 0.20) for d in bench.PANEL]
    rows = [line for line in bench.acceptance_table(results).splitlines() if line.startswith("| cspdet")]
    assert rows == [
        "| cspdet_small_scratch | 0 | 0.500 | - | - | ultralytics_yolo11n (0.350) | +0.150 (met) | 0.60 (met) | "
        "+0.150 raccoon (met) |",
        "| cspdet_small_scratch | 0,1,2 vs 0 | 0.400 | - | - | ultralytics_yolo11n (0.350) | +0.050 (met) | "
        "0.70 (met) | +0.050 raccoon (met) |"]


def test_a_run_without_a_clean_time_shows_a_dash_not_a_crash(bench):
    """A row whose training time was not measured cleanly (train_s left empty in the CSV) keeps its AP in every
    table; its time and time ratio are "-"."""
    results = [dict(_row(d, "cspdet_small_scratch", 0, 0.3), train_s="", s_per_epoch="") for d in bench.PANEL]
    results += [_row(d, ref, 0, 0.2) for d in bench.PANEL for ref in bench.REFERENCES]
    assert "| cspdet_small_scratch | 0 | 0.300 |" in bench.dataset_table(results, "cards")
    assert bench.dataset_table(results, "cards").split("\n")[4].endswith("| - | - |")
    assert "| +0.100 (met) | - | +0.100 raccoon (met) |" in bench.acceptance_table(results)
