"""The quickstart reports the validation of the weights it exports (the best checkpoint), not only the last."""

import logging

from fitdiff.quickstart import stages


def test_autoencoder_report_names_the_exported_checkpoint(tmp_path, caplog):
    run = tmp_path / "autoencoder"
    (run / "csv").mkdir(parents=True)
    (run / "autoencoder.safetensors").write_bytes(b"")  # present: the stage reuses it and only reports
    (run / "csv" / "metrics.csv").write_text(
        "epoch,step,train/loss,val/rec_loss,val/diffuse_psnr,val/specular_psnr,val/normals_angular_error\n"
        "0,9,0.5,,,,\n"
        "0,99,,0.30,25.0,24.0,3.0\n"
        "1,199,,0.10,29.0,29.5,1.9\n"  # best val/rec_loss: the exported checkpoint
        "2,299,,0.20,27.5,30.0,2.1\n"
    )
    with caplog.at_level(logging.INFO, logger="fitdiff.quickstart"):
        stages._stage_autoencoder(tmp_path)
    text = caplog.text
    assert "exported weights (best val/rec_loss): val/diffuse_psnr 29.00, val/specular_psnr 29.50" in text
    assert "last validation: val/diffuse_psnr 27.50, val/specular_psnr 30.00, val/normals_angular_error 2.10" in text


def test_quickstart_autoencoder_is_bounded_by_steps_not_time(compose_train):
    cfg = compose_train("quickstart_ae")
    assert cfg.trainer.max_steps == 500 and cfg.trainer.get("max_time") is None  # same step on every machine
    assert cfg.model.loss.disc_start >= cfg.trainer.max_steps  # the GAN phase starts after the budget
    assert cfg.trainer.max_steps % cfg.trainer.val_check_interval == 0  # the last step is validated
    assert cfg.callbacks.rich_progress_bar._target_ == "fitdiff.callbacks.StepProgressBar"
