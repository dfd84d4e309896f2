"""W&B never prompts or hangs: offline without a key or without a reachable server; WANDB_MODE wins."""

from __future__ import annotations

import socket

from fitdiff.loggers import resolve_wandb_mode, wandb_logger


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_no_api_key_means_offline():
    assert resolve_wandb_mode("auto") == "offline"


def test_key_but_unreachable_server_means_offline(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{_closed_port()}")
    assert resolve_wandb_mode("auto", timeout=2.0) == "offline"


def test_silent_server_is_given_up_after_the_timeout(monkeypatch):
    """A server that never answers: the connection attempt is bounded by ``timeout``, then offline."""
    attempts = []

    def black_hole(address, timeout=None, *args, **kwargs):
        attempts.append((address, timeout))
        raise TimeoutError("timed out")

    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://10.255.255.1:8080")
    monkeypatch.setattr(socket, "create_connection", black_hole)
    assert resolve_wandb_mode("auto", timeout=1.5) == "offline"
    assert attempts == [(("10.255.255.1", 8080), 1.5)]


def test_key_and_reachable_server_means_online(monkeypatch):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{listener.getsockname()[1]}")
        assert resolve_wandb_mode("auto") == "online"


def test_netrc_entry_counts_as_key(monkeypatch, tmp_path):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1\n  login user\n  password secret\n")
    netrc.chmod(0o600)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{listener.getsockname()[1]}")
        assert resolve_wandb_mode("auto") == "offline"  # no key anywhere
        monkeypatch.setenv("NETRC", str(netrc))
        assert resolve_wandb_mode("auto") == "online"  # `wandb login` stores the key in ~/.netrc


def test_explicit_and_environment_modes(monkeypatch):
    assert resolve_wandb_mode("disabled") == "disabled"
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert resolve_wandb_mode("online") == "offline"


def test_logger_is_offline_and_writes_into_save_dir(tmp_path):
    logger = wandb_logger(save_dir=str(tmp_path), name="t", tags=["a"])
    logger.log_metrics({"x": 1.0})
    logger.experiment.finish()
    assert any(tmp_path.glob("wandb/offline-run-*"))
