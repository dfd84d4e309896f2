"""data_prep/train_recognizer.py: a recognizer from the photos of one or more shard datasets, with its
held-out verification ROC-AUC."""

from __future__ import annotations

import importlib.util
import json

import pytest

from helpers import REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


def _script():
    spec = importlib.util.spec_from_file_location("train_recognizer", REPO_ROOT / "data_prep" / "train_recognizer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_with_and_without_extra_training_photos(tiny_synthetic, tmp_path, capsys):
    script = _script()
    assert script.main(["--data", str(tiny_synthetic), "--epochs", "2", "--threads", "1",
                        "--out", str(tmp_path / "r.safetensors")]) == 0
    alone = json.loads(capsys.readouterr().out)
    assert 0.0 <= alone["roc_auc"] <= 1.0 and alone["genuine_pairs"] > 0 and (tmp_path / "r.safetensors").is_file()
    assert script.main(["--data", str(tiny_synthetic), "--extra", str(tiny_synthetic), "--epochs", "2",
                        "--threads", "1"]) == 0
    both = json.loads(capsys.readouterr().out)
    # the extra dataset's subjects are classes of their own, its photos added to the training set
    assert both["classes"] == 2 * alone["classes"] and both["eval_photos"] == alone["eval_photos"]
    assert script.main(["--data", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err
