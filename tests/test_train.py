"""train.py on a small generated dataset: exact resume, interruption, bad input."""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import pytest

import jittor as jt

import losses
import train
from datasets import ADE20K
from checkpoints import read_checkpoint
from process_helpers import live_processes_in_group, wait_for
from tiny_training import synthetic_root, tiny_run

ROOT = Path(__file__).resolve().parents[1]
from datasets import synthetic


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return synthetic_root(tmp_path_factory)


def weights(path):
    return read_checkpoint(str(path))["model"]


def test_resume_continues_exactly(data_root, tmp_path):
    assert train.main(tiny_run(data_root, tmp_path, "--ckpt-interval", "2")) == 0
    straight = weights(tmp_path / "latest.safetensors")
    assert read_checkpoint(str(tmp_path / "iter_2.safetensors"))["iteration"] == 2
    assert train.main(["--resume", str(tmp_path / "iter_2.safetensors")]) == 0
    resumed = weights(tmp_path / "latest.safetensors")
    assert set(resumed) == set(straight)
    for name in straight:  # bit for bit: same data draws, dropout seeds, optimizer state
        np.testing.assert_array_equal(resumed[name], straight[name], err_msg=name)
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records] == [1, 2, 3, 4]  # the resumed run's 3, 4 replace the first's


def test_sigint_saves_stops_and_restores_the_signal_handlers(data_root, tmp_path, monkeypatch):
    real = losses.segmentation_loss
    calls = []

    def interrupting_loss(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # the main loss of the second iteration
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)
    monkeypatch.setattr(train, "segmentation_loss", interrupting_loss)
    handlers = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)]
    assert train.main(tiny_run(data_root, tmp_path, "--ckpt-interval", "100")) == 128 + signal.SIGINT
    assert read_checkpoint(str(tmp_path / "latest.safetensors"))["iteration"] == 2
    assert signal.alarm(0) == 0, "the stop deadline outlived the run"
    assert [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)] == handlers


@pytest.mark.parametrize("interval", [1, 100])
def test_a_non_finite_loss_stops_the_run_without_saving_it(data_root, tmp_path, monkeypatch, capsys, interval):
    """Iteration 3's loss is NaN. With a checkpoint every iteration the loop waits for each loss before
    saving: iteration 2's checkpoint stays the last. With no checkpoint or log line before the end, the
    loss arrives asynchronously and stops the run at most one iteration later, nothing saved."""
    real = losses.segmentation_loss
    calls = []

    def exploding_loss(*args, **kwargs):
        calls.append(1)
        loss = real(*args, **kwargs)
        return loss * float("nan") if len(calls) in (5, 6) else loss  # iteration 3's main and aux losses
    monkeypatch.setattr(train, "segmentation_loss", exploding_loss)
    assert train.main(tiny_run(data_root, tmp_path, "--iters", "8", "--ckpt-interval", str(interval),
                               "--log-interval", str(interval))) == 1
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("error: iteration 3: the loss is nan; stopped without saving")
    assert len(calls) // 2 <= 4
    latest = tmp_path / "latest.safetensors"
    assert read_checkpoint(str(latest))["iteration"] == 2 if interval == 1 else not latest.exists()


def test_the_loop_waits_for_the_loss_only_where_it_needs_it(data_root, tmp_path, monkeypatch):
    """The loss reaches the host asynchronously: the loop waits for it (settles) at log lines,
    checkpoints and the end only, not at every iteration."""
    settled = []
    real = train.Losses.settle

    def counting(self, stop):
        result = real(self, stop)
        settled.append(self.latest[0])  # the iteration whose loss it waited for
        return result
    monkeypatch.setattr(train.Losses, "settle", counting)
    assert train.main(tiny_run(data_root, tmp_path, "--iters", "6", "--log-interval", "3",
                               "--ckpt-interval", "100")) == 0
    assert settled == [3, 6, 6]  # two log lines, then the final checkpoint


def test_a_kept_checkpoint_is_written_once_and_named_twice(data_root, tmp_path):
    assert train.main(tiny_run(data_root, tmp_path, "--iters", "2", "--ckpt-interval", "2")) == 0
    assert os.path.samefile(tmp_path / "latest.safetensors", tmp_path / "iter_2.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "curves.png", "iter_2.safetensors",
                                                          "latest.safetensors", "log.jsonl"]


def test_resume_removes_partial_saves_and_overwrite_starts_afresh(data_root, tmp_path):
    assert train.main(tiny_run(data_root, tmp_path, "--iters", "2", "--ckpt-interval", "1")) == 0
    (tmp_path / ".tmp-killed-during-a-save.safetensors").write_bytes(b"part of a checkpoint")
    assert train.main(["--resume", str(tmp_path / "iter_1.safetensors"), "--iters", "3", "--ckpt-interval", "100"]) == 0
    assert not list(tmp_path.glob(".tmp-*"))
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records] == [1, 2, 3]
    assert train.main(tiny_run(data_root, tmp_path, "--iters", "1", "--ckpt-interval", "100", "--overwrite")) == 0
    assert not list(tmp_path.glob("iter_*.safetensors"))
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 1
    assert read_checkpoint(str(tmp_path / "latest.safetensors"))["iteration"] == 1


def test_ohem_selects_the_pixels_of_the_main_loss_only():
    rng = np.random.default_rng(0)
    main, aux = (jt.array(5 * rng.normal(size=(2, 5, 4, 4)).astype(np.float32)) for _ in range(2))  # confident
    labels = jt.array(rng.integers(0, 5, (2, 8, 8)).astype(np.int32))
    ohem = losses.Ohem(threshold=0.7, min_kept=10)
    plain_aux = losses.segmentation_loss(aux, labels).item()
    assert losses.segmentation_loss(aux, labels, ohem).item() != pytest.approx(plain_aux, rel=1e-3)
    got = train.training_loss((main, aux), labels, {"aux_weight": 0.4}, ohem).item()
    assert got == pytest.approx(losses.segmentation_loss(main, labels, ohem).item() + 0.4 * plain_aux, rel=1e-6)


def test_seconds_per_iteration_leave_evaluation_time_out(data_root, tmp_path, monkeypatch):
    clock = [0.0]  # a training iteration takes 1 s on it (two losses), an evaluation 100 s
    real_loss, real_evaluate = losses.segmentation_loss, train.evaluate

    def loss_taking_half_a_second(*args, **kwargs):
        clock[0] += 0.5
        return real_loss(*args, **kwargs)

    def evaluation_taking_100_seconds(*args, **kwargs):
        clock[0] += 100
        return real_evaluate(*args, **kwargs)
    monkeypatch.setattr(train, "time", types.SimpleNamespace(time=lambda: clock[0]))
    monkeypatch.setattr(train, "segmentation_loss", loss_taking_half_a_second)
    monkeypatch.setattr(train, "evaluate", evaluation_taking_100_seconds)
    assert train.main(tiny_run(data_root, tmp_path, "--log-interval", "4", "--eval-interval", "2")) == 0
    logged = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["seconds_per_iter"] for r in logged if "loss" in r] == [1.0]


@pytest.mark.parametrize("flags,message", [
    (["--iters", "0"], "--iters must be positive, got 0"),
    (["--batch-size", "-2"], "--batch-size must be positive"),
    (["--crop-size", "4096"], "--crop-size 4096 is larger than any training image becomes"),
    (["--pretrained", "missing.pkl"], "missing.pkl: no such file"),
    (["--workers", "-1"], "--workers must be 0 or more, got -1"),
    (["--stop-timeout", "0"], "--stop-timeout must be positive, got 0"),
])
def test_bad_input_is_one_line_before_any_work(data_root, tmp_path, capsys, flags, message):
    assert train.main(tiny_run(data_root, tmp_path / "run", *flags)) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_missing_dataset_points_to_the_download_and_the_demo(tmp_path, capsys):
    assert train.main(["--backbone", "van_base", "--data-root", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "no ADE20K found" in err and "nowhere/images/training" in err and "make demo" in err
    assert "ADEChallengeData2016.zip" in err
    assert train.main(["--backbone", "resnet101", "--preset", "cityscapes", "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no Cityscapes found" in err and "leftImg8bit_trainvaltest.zip" in err


@pytest.mark.parametrize("name", ["latest.safetensors", "latest.safetensors"])  # this format and the older one
def test_existing_work_dir_is_not_overwritten(data_root, tmp_path, capsys, name):
    (tmp_path / name).write_bytes(b"previous run")
    assert train.main(tiny_run(data_root, tmp_path)) == 2
    assert f"already has checkpoints; continue with --resume {tmp_path / name}" in capsys.readouterr().err
    assert (tmp_path / name).read_bytes() == b"previous run"


def test_resume_refuses_another_backbone_or_a_foreign_file(data_root, tmp_path, capsys):
    assert train.main(tiny_run(data_root, tmp_path, "--iters", "1")) == 0
    assert train.main(["--resume", str(tmp_path / "latest.safetensors"), "--backbone", "van_b1"]) == 2
    assert "--backbone van_b1 differs from the checkpoint's van_b0" in capsys.readouterr().err
    (tmp_path / "foreign.pkl").write_bytes(b"not a checkpoint")
    assert train.main(["--resume", str(tmp_path / "foreign.pkl")]) == 2
    assert "foreign.pkl: not a readable checkpoint" in capsys.readouterr().err


def test_learning_rate_schedules():
    sgd = train.resolve_config(train.parse_args(["--backbone", "resnet101"]))
    assert (sgd["optimizer"], sgd["lr"], sgd["weight_decay"], sgd["batch_size"], sgd["iters"]) == \
        ("sgd", 0.01, 5e-4, 16, 80_000)
    assert train.learning_rate(0, sgd) == pytest.approx(0.01)
    assert train.learning_rate(40_000, sgd) == pytest.approx((0.01 - 1e-4) * 0.5 ** 0.9 + 1e-4)
    adamw = train.resolve_config(train.parse_args(["--backbone", "van_base"]))
    assert (adamw["optimizer"], adamw["lr"], adamw["weight_decay"]) == ("adamw", 6e-5, 0.01)
    assert train.learning_rate(750, adamw) == pytest.approx(6e-5 * (1 - 750 / 80_000) * (1e-6 + (1 - 1e-6) * 0.5))
    assert train.learning_rate(1500, adamw) == pytest.approx(6e-5 * (1 - 1500 / 80_000))


def test_adamw_leaves_norm_parameters_out_of_weight_decay():
    """The VAN recipe (mmcv custom_keys 'norm': decay_mult 0): with zero gradients one AdamW step
    moves only the decayed tensors, each by exactly lr * weight_decay of itself."""
    from models import build_ccnet
    model = build_ccnet("van_b0", num_classes=5)
    config = {"optimizer": "adamw", "lr": 0.1, "weight_decay": 0.01}
    optimizer = train.make_optimizer(model, config)
    trainable = {n: p for n, p in model.named_parameters() if not p.is_stop_grad()}
    before = {n: p.numpy().copy() for n, p in trainable.items()}
    optimizer.step(sum((p * 0).sum() for p in trainable.values()))
    undecayed = {n for n in trainable if "norm" in n}
    assert "backbone.block1.0.norm1.weight" in undecayed and "backbone.norm4.bias" in undecayed
    for name, p in trainable.items():
        factor = 1.0 if name in undecayed else 1 - 0.1 * 0.01
        np.testing.assert_allclose(p.numpy(), before[name] * factor, rtol=1e-6, err_msg=name)


def test_ccl_trains_the_embedding_and_plots_the_curves(data_root, tmp_path):
    assert train.main(tiny_run(data_root, tmp_path, "--ccl", "--iters", "2", "--eval-interval", "2")) == 0
    trained = weights(tmp_path / "latest.safetensors")
    # van_b0's fused map has 64+160+256 = 480 channels: RCCA works on 120, the embedding has 120 // 16
    assert trained["head.embed.weight"].shape == (7, 120, 1, 1)
    assert read_checkpoint(str(tmp_path / "latest.safetensors"))["config"]["ccl"] is True
    assert (tmp_path / "curves.png").stat().st_size > 10_000


def test_the_same_seed_gives_the_same_initial_weights(data_root, tmp_path):
    for name in ("a", "b"):
        assert train.main(tiny_run(data_root, tmp_path / name, "--iters", "1")) == 0
    a, b = weights(tmp_path / "a" / "latest.safetensors"), weights(tmp_path / "b" / "latest.safetensors")
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


# train.py as a user runs it: its own process, worker processes, signals from outside.

@pytest.fixture
def launch():
    """Start train.py in a session of its own, so that every process it starts shares its group id;
    whatever of it is still alive when the test ends (a failed test) is killed."""
    runs = []

    def start(*args):
        out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        run = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, start_new_session=True,
                               stdout=out, stderr=err)
        run.out, run.err = out, err
        runs.append(run)
        return run
    yield start
    for run in runs:
        for pid in live_processes_in_group(run.pid):
            os.kill(pid, signal.SIGKILL)
        run.wait()


def output(stream):
    stream.seek(0)
    return stream.read()


def finish(run, seconds):
    """(stdout, stderr) of a launched run once it has ended."""
    run.wait(timeout=seconds)
    return output(run.out), output(run.err)


def wait_while_running(run, condition, what):
    """Wait (2 minutes at most) for `condition` while the run goes on; fail with its stderr's end."""
    wait_for(lambda: condition() or run.poll() is not None, 120,
             lambda: f"{what} (train.py's stderr ends: {output(run.err)[-1500:]!r})")
    assert run.poll() is None, f"train.py ended ({run.returncode}): {output(run.err)[-1500:]}"


def logged_iterations(work_dir):
    path = Path(work_dir) / "log.jsonl"
    return [json.loads(line)["iter"] for line in path.read_text().splitlines()] if path.exists() else []


def long_run(data_root, work_dir, *extra):
    return tiny_run(data_root, work_dir, "--iters", "100000", "--workers", "2", *extra)


def test_a_truncated_image_ends_the_run_with_one_line_naming_it(tmp_path, launch):
    root = tmp_path / "data"
    synthetic.write_ade20k(str(root), train=4, val=1, size=96)
    # the first file of the second batch: a data worker reads it (the first batch is read by train.py)
    training = ADE20K(str(root), "training")
    bad = Path(training.files[training.file_index(2)][0])
    bad.write_bytes(bad.read_bytes()[:2000])
    run = launch(*tiny_run(str(root), tmp_path / "run", "--workers", "2"))  # batch 2: kernels compiled above
    _, err = finish(run, 120)
    assert run.returncode == 1, err[-3000:]
    assert "Traceback" not in err
    assert err.splitlines()[-1].startswith(f"error: {bad}: unreadable image")
    wait_for(lambda: not live_processes_in_group(run.pid), 5, "end of the data workers")


def test_sigterm_saves_and_ends_the_run_and_its_workers(data_root, tmp_path, launch):
    run = launch(*long_run(data_root, tmp_path, "--ckpt-interval", "1000"))
    wait_while_running(run, lambda: len(logged_iterations(tmp_path)) >= 2, "iteration 2")
    run.send_signal(signal.SIGTERM)
    out, _ = finish(run, 60)
    assert run.returncode == 128 + signal.SIGTERM
    stopped_at = read_checkpoint(str(tmp_path / "latest.safetensors"))["iteration"]
    assert stopped_at >= 2 and f"SIGTERM: stopped at iteration {stopped_at}" in out
    wait_for(lambda: not live_processes_in_group(run.pid), 5, "end of the data workers")


def test_sigterm_to_the_whole_process_group_stops_as_cleanly(data_root, tmp_path, launch):
    run = launch(*long_run(data_root, tmp_path, "--ckpt-interval", "1000"))
    wait_while_running(run, lambda: len(logged_iterations(tmp_path)) >= 2, "iteration 2")
    os.killpg(run.pid, signal.SIGTERM)  # as Ctrl-C, `kill -TERM -PGID` or a batch scheduler do
    finish(run, 60)
    assert run.returncode == 128 + signal.SIGTERM
    assert read_checkpoint(str(tmp_path / "latest.safetensors"))["iteration"] >= 2
    wait_for(lambda: not live_processes_in_group(run.pid), 5, "end of the data workers")


def test_after_sigkill_the_workers_end_and_resume_logs_each_iteration_once(data_root, tmp_path, launch):
    run = launch(*long_run(data_root, tmp_path, "--ckpt-interval", "2"))
    wait_while_running(run, lambda: (tmp_path / "iter_2.safetensors").exists() and len(logged_iterations(tmp_path)) >= 3,
                       "iteration 3 after the checkpoint of iteration 2")
    run.kill()
    run.wait()
    wait_for(lambda: not live_processes_in_group(run.pid), 5, "end of the orphaned data workers")
    kept = read_checkpoint(str(tmp_path / "latest.safetensors"))["iteration"]
    assert train.main(["--resume", str(tmp_path / "latest.safetensors"), "--iters", str(kept + 1), "--workers", "0"]) == 0
    assert logged_iterations(tmp_path) == list(range(1, kept + 2))


STOPPING = """
import os, signal, sys, time
import train
stop = train.StopRequest({timeout})
for _ in range({signals}):
    os.kill(os.getpid(), signal.SIGTERM)
time.sleep(0.5)  # a Python handler runs here; then a computation that never returns to Python
time.sleep(3600)
"""


@pytest.mark.parametrize("signals,code", [(1, -signal.SIGALRM), (2, 128 + signal.SIGTERM)])
def test_a_stop_request_ends_the_process_by_its_deadline_or_at_a_second_signal(signals, code):
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-c", STOPPING.format(timeout=2, signals=signals)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == code and time.monotonic() - started < 60
    assert "SIGTERM: saving and stopping after this iteration (within 2 s" in run.stderr
