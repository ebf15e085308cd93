"""Train CCNet on ADE20K, or on any dataset in its layout.

    python train.py --backbone van_base --pretrained pretrained/van_base.pkl
    python train.py --backbone resnet101 --pretrained pretrained/resnet101_mit.pkl
    python train.py --resume work_dirs/ccnet_van_base/latest.pkl

The loop below is the whole training step: data, forward, loss, backward and update, log,
checkpoint, evaluation. Defaults follow the published recipes, chosen by backbone: ResNet-101 the
official CCNet's (SGD, momentum 0.9, lr 0.01, weight decay 5e-4, poly 0.9 to 1e-4), VAN the VAN
authors' segmentation recipe (AdamW, lr 6e-5, weight decay 0.01, 1,500 warm-up iterations, poly
1.0); both 80k iterations of batch 16 at crop 512.

Under MPI (mpirun -np N python train.py ...) each process trains on its slice of the global batch:
gradients are averaged and batch-norm statistics shared (models/norm.py), dropout masks are drawn
for the global batch (models/stochastic.py), and only process 0 writes files. Randomness is a
function of (seed, iteration) and of (seed, draw) for augmentation, so a checkpoint needs no RNG
state for --resume to continue exactly.
"""
import argparse
import json
import math
import os
import signal
import sys
import time

import numpy as np
from tqdm import tqdm

import jittor_env  # noqa: F401
import jittor as jt
from jittor import nn

from datasets import ADE20K, NUM_CLASSES, DatasetError
from datasets.ade20k import list_split
from datasets.transforms import RATIO_RANGE, SCALE
from inference import Protocol, evaluate
from curves import plot_curves
from losses import Ohem, category_consistent_loss, segmentation_loss
from checkpoints import build_model, is_resumable, read_record, record_of_config
from models import BACKBONES
from models.checkpoint import CheckpointError, load_checked, read_state_dict, save_atomic

RECIPES = {
    "sgd": dict(lr=0.01, weight_decay=5e-4, warmup_iters=0, power=0.9, min_lr=1e-4),
    "adamw": dict(lr=6e-5, weight_decay=0.01, warmup_iters=1500, power=1.0, min_lr=0.0),
}
DEFAULTS = dict(data_root="data/ADEChallengeData2016", recurrence=2, iters=80_000, batch_size=16,
                crop_size=512, img_scale=list(SCALE), aux_weight=0.4, ohem=False, ccl=False, workers=2, seed=0, ckpt_interval=2000,
                eval_interval=8000, log_interval=20, pretrained=None)
NO_DATA = ("no ADE20K found: {error}\nGet ADEChallengeData2016.zip (the MIT Scene Parsing benchmark), "
           "unpack it and pass --data-root path/to/ADEChallengeData2016 (see README, 'ADE20K').\n"
           "To see the whole pipeline now, on a generated dataset and the CPU: make demo")


class UsageError(Exception):
    """Bad input found before any work starts: printed as one line, exit code 2."""


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])  # defaults in the help: per backbone
    m = p.add_argument_group("model")
    m.add_argument("--backbone", choices=BACKBONES, help="required unless --resume")
    m.add_argument("--recurrence", type=int, help="criss-cross recurrences R (default 2)")
    m.add_argument("--pretrained", help="converted ImageNet backbone weights (tools/convert_weights.py)")
    d = p.add_argument_group("data")
    d.add_argument("--data-root", help=f"folder with images/ and annotations/ (default {DEFAULTS['data_root']})")
    d.add_argument("--crop-size", type=int, help="training crop (default 512)")
    d.add_argument("--img-scale", type=int, nargs=2, metavar=("LONG", "SHORT"),
                   help="keep-ratio resize limits, randomised 0.5-2x in training (default 2048 512)")
    d.add_argument("--workers", type=int, help="data loading processes (default 2)")
    s = p.add_argument_group("schedule")
    s.add_argument("--iters", type=int, help="training iterations (default 80000)")
    s.add_argument("--batch-size", type=int, help="global batch, split across processes (default 16)")
    s.add_argument("--optimizer", choices=RECIPES, help="default per backbone: sgd for resnet101, adamw for VAN")
    s.add_argument("--lr", type=float, help="base learning rate (default per backbone: 0.01 SGD, 6e-5 AdamW)")
    s.add_argument("--weight-decay", type=float, help="default per backbone: 5e-4 SGD, 0.01 AdamW")
    s.add_argument("--warmup-iters", type=int, help="linear warm-up (default per backbone: 0 SGD, 1500 AdamW)")
    s.add_argument("--seed", type=int, help="seed of data order, augmentation and dropout (default 0)")
    l_ = p.add_argument_group("loss")
    l_.add_argument("--aux-weight", type=float, help="weight of the auxiliary (DSN) loss (default 0.4)")
    l_.add_argument("--ohem", action="store_true", default=None, help="online hard example mining (0.7, 100k)")
    l_.add_argument("--ccl", action="store_true", default=None,
                    help="add the category consistent loss on the RCCA features (TPAMI version)")
    r = p.add_argument_group("run")
    r.add_argument("--work-dir", help="where checkpoints and logs go (default work_dirs/ccnet_BACKBONE)")
    r.add_argument("--resume", help="a checkpoint of this script to continue exactly")
    r.add_argument("--overwrite", action="store_true", help="start afresh in a work dir that has checkpoints")
    r.add_argument("--ckpt-interval", type=int, help="iterations between kept checkpoints (default 2000)")
    r.add_argument("--eval-interval", type=int, help="iterations between evaluations, 0 = none (default 8000)")
    r.add_argument("--log-interval", type=int, help="iterations between log lines (default 20)")
    return p.parse_args(argv)


def resolve_config(args):
    """The full configuration: checkpoint (on --resume), then flags given, then recipe defaults."""
    given = {k: v for k, v in vars(args).items() if v is not None and k not in ("resume", "overwrite")}
    base = {}
    if args.resume:
        base = load_resume(args.resume)["config"]
        for key in ("backbone", "recurrence", "num_classes", "ccl"):
            saved = base.get(key, DEFAULTS.get(key))
            if key in given and given[key] != saved:
                raise UsageError(f"--{key.replace('_', '-')} {given[key]} differs from the checkpoint's "
                                 f"{saved} ({args.resume})")
    elif not args.backbone:
        raise UsageError("--backbone is required (one of " + ", ".join(BACKBONES) + ") unless --resume")
    config = {**DEFAULTS, **base, **given}
    config.setdefault("optimizer", "sgd" if config["backbone"] == "resnet101" else "adamw")
    for key, value in RECIPES[config["optimizer"]].items():
        config.setdefault(key, value)
    config.setdefault("work_dir", f"work_dirs/ccnet_{config['backbone']}")
    config["num_classes"] = NUM_CLASSES
    return config


def check_config(config, args):
    """Every check that can fail, before any work."""
    for key in ("iters", "batch_size", "crop_size"):
        if config[key] <= 0:
            raise UsageError(f"--{key.replace('_', '-')} must be positive, got {config[key]}")
    largest = int(min(config["img_scale"]) * RATIO_RANGE[1])
    if min(config["img_scale"]) <= 0:
        raise UsageError(f"--img-scale must be positive, got {config['img_scale']}")
    if config["crop_size"] > largest:
        raise UsageError(f"--crop-size {config['crop_size']} is larger than any training image becomes "
                         f"(short side at most {largest} after the random resize)")
    if config["recurrence"] < 0:
        raise UsageError(f"--recurrence must be >= 0, got {config['recurrence']}")
    if jt.in_mpi and config["batch_size"] % jt.world_size:
        raise UsageError(f"--batch-size {config['batch_size']} does not split over {jt.world_size} processes")
    try:
        list_split(config["data_root"], "training")
        if config["eval_interval"]:
            list_split(config["data_root"], "validation")
    except DatasetError as error:
        raise UsageError(NO_DATA.format(error=error)) from None
    if config["pretrained"] and not os.path.isfile(config["pretrained"]):
        raise UsageError(f"{config['pretrained']}: no such file (--pretrained)")
    latest = os.path.join(config["work_dir"], "latest.pkl")
    if not args.resume and os.path.exists(latest) and not args.overwrite:
        raise UsageError(f"{config['work_dir']} already has checkpoints; continue with --resume {latest} "
                         f"or start afresh with --overwrite")


_resume_cache = {}


def load_resume(path):
    if path not in _resume_cache:
        checkpoint = read_record(path)
        if not is_resumable(checkpoint):
            raise CheckpointError(f"{path}: cannot resume from an evaluation-only checkpoint (it has no "
                                  f"optimizer state or iteration); evaluate it with test.py --ckpt {path}")
        _resume_cache[path] = checkpoint
    return _resume_cache[path]


def make_optimizer(model, config):
    params = [p for p in model.parameters() if not p.is_stop_grad()]
    if config["optimizer"] == "sgd":
        return nn.SGD(params, config["lr"], momentum=0.9, weight_decay=config["weight_decay"])
    return nn.AdamW(params, config["lr"], weight_decay=config["weight_decay"], betas=(0.9, 0.999))


def learning_rate(iteration, config):
    """Poly decay from the base lr to min_lr, after a linear warm-up from 1e-6 of it."""
    base, low = config["lr"], config["min_lr"]
    lr = (base - low) * (1 - iteration / config["iters"]) ** config["power"] + low
    if iteration < config["warmup_iters"]:
        lr *= 1e-6 + (1 - 1e-6) * iteration / config["warmup_iters"]
    return lr


def optimizer_state(optimizer):
    """The optimizer's buffers (momentum; Adam's moments) and step count, as NumPy."""
    buffers = [{k: [v.numpy() for v in group[k]] for k in ("values", "m") if k in group}
               for group in optimizer.param_groups]
    return {"n_step": optimizer.n_step, "groups": buffers}


def restore_optimizer(optimizer, state, path):
    for group, saved in zip(optimizer.param_groups, state["groups"]):
        for key, arrays in saved.items():
            if len(arrays) != len(group[key]) or any(list(a.shape) != list(v.shape) for a, v in zip(arrays, group[key])):
                raise CheckpointError(f"{path}: optimizer state does not fit this model")
            for var, array in zip(group[key], arrays):
                var.assign(jt.array(array))
    optimizer.n_step = state["n_step"]


def save_checkpoint(model, optimizer, iteration, config, names):
    """Write the checkpoint under each name in the work dir, atomically. Every process fetches the
    values (they may still depend on a pending gradient all-reduce); process 0 writes."""
    arch, protocol = record_of_config(config)
    checkpoint = {"model": {k: v.numpy() for k, v in model.state_dict().items()},
                  "optimizer": optimizer_state(optimizer), "iteration": iteration, "config": config,
                  "arch": arch, "protocol": protocol}
    if jt.rank != 0:
        return
    for name in names:
        save_atomic(checkpoint, os.path.join(config["work_dir"], name))


class StopRequest:
    """SIGINT / SIGTERM ask the loop to save and stop after the current iteration. Data worker
    processes, forked later, inherit the handler: there it just ends the worker."""

    def __init__(self):
        self.signal = None
        self.pid = os.getpid()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.handle)

    def handle(self, signum, frame):
        if os.getpid() != self.pid:
            os._exit(0)
        self.signal = signal.Signals(signum).name


def stop_workers(dataset):
    """End the data worker processes (they keep prefetching past the last batch) and wait for them;
    Jittor's own SIGCHLD handler would take their end for a crash and exit the process."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for worker in getattr(dataset, "workers", []):
        worker.p.kill()
        worker.p.join()


def log_line(config, record):
    if jt.rank == 0:
        with open(os.path.join(config["work_dir"], "log.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")


def say(message):
    if jt.rank == 0:
        tqdm.write(message)


def plot(config):
    if jt.rank == 0:
        work_dir = config["work_dir"]
        plot_curves(os.path.join(work_dir, "log.jsonl"), os.path.join(work_dir, "curves.png"),
                    f"CCNet {config['backbone']}, R={config['recurrence']}")


def training_loss(outputs, labels, config, ohem):
    """Main + aux_weight * auxiliary cross-entropy (+ the category consistent loss with --ccl)."""
    main, aux, *embedding = outputs
    loss = segmentation_loss(main, labels, ohem) + config["aux_weight"] * segmentation_loss(aux, labels, ohem)
    if embedding:
        loss = loss + category_consistent_loss(embedding[0], labels)
    return loss


def agree(loss, stop):
    """(mean loss over processes, whether any process was asked to stop): every process sees the
    same values, so all of them stop at the same iteration, on a NaN anywhere too."""
    if not jt.in_mpi:
        return loss.item(), bool(stop.signal)
    both = jt.concat([loss.reshape(1), jt.array([float(bool(stop.signal))])]).mpi_all_reduce("mean").numpy()
    return float(both[0]), both[1] > 0


def train(config, resume=None):
    jt.set_global_seed(config["seed"], different_seed_for_mpi=False)  # the same initial weights
    model = build_model(record_of_config(config)[0])
    optimizer = make_optimizer(model, config)
    start = 0
    if resume:
        checkpoint = load_resume(resume)
        load_checked(model, checkpoint["model"], resume)
        restore_optimizer(optimizer, checkpoint["optimizer"], resume)
        start = checkpoint["iteration"]
    elif config["pretrained"]:
        backbone = model if config["backbone"] == "resnet101" else model.backbone
        load_checked(backbone, read_state_dict(config["pretrained"]), config["pretrained"],
                     may_miss=("head.", "dsn.") if backbone is model else ())
    if jt.rank == 0:
        os.makedirs(config["work_dir"], exist_ok=True)
        with open(os.path.join(config["work_dir"], "config.json"), "w") as f:
            json.dump(config, f, indent=2)

    batch = config["batch_size"]
    data = ADE20K(config["data_root"], "training", config["backbone"], config["crop_size"], config["seed"],
                  batch_size=batch, num_workers=config["workers"], scale=config["img_scale"])
    data.set_draws(start * batch, config["iters"] * batch)
    val = ADE20K(config["data_root"], "validation", config["backbone"]) if config["eval_interval"] else None
    ohem = Ohem() if config["ohem"] else None
    stop = StopRequest()
    model.train()
    bar = tqdm(total=config["iters"], initial=start, unit="it", disable=jt.rank != 0, dynamic_ncols=True)
    iteration, tic, since = start, time.time(), start  # timing of the current log interval
    for images, labels in data:
        lr = learning_rate(iteration, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        # dropout depends on the iteration only, and is the same in every process (global-batch masks)
        jt.set_global_seed(config["seed"] * 1_000_003 + iteration, different_seed_for_mpi=False)
        loss = training_loss(model(images), labels, config, ohem)
        optimizer.step(loss)
        value, stopping = agree(loss, stop)
        if not math.isfinite(value):
            stop_workers(data)
            sys.exit(f"iteration {iteration + 1}: the loss is {value}; stopped without saving "
                     f"(the last checkpoint in {config['work_dir']} is intact)")
        iteration += 1
        bar.update(1)
        bar.set_postfix(loss=f"{value:.4f}", lr=f"{lr:.2e}")
        if iteration % config["log_interval"] == 0 or iteration == config["iters"]:
            log_line(config, {"iter": iteration, "loss": value, "lr": lr,
                              "seconds_per_iter": (time.time() - tic) / (iteration - since)})
            tic, since = time.time(), iteration
        if iteration % config["ckpt_interval"] == 0:
            save_checkpoint(model, optimizer, iteration, config, ["latest.pkl", f"iter_{iteration}.pkl"])
        if val is not None and iteration % config["eval_interval"] == 0:
            results = evaluate(model, val, Protocol(scale=tuple(config["img_scale"]), align_corners=True),
                               config["num_classes"], progress=False)
            log_line(config, {"iter": iteration, "eval": {k: results[k] for k in ("aAcc", "mIoU", "mAcc")}})
            say(f"iteration {iteration}: mIoU {100 * results['mIoU']:.2f} aAcc {100 * results['aAcc']:.2f}")
            plot(config)
            model.train()
            tic = time.time()  # evaluation time is not training time
        if stopping:
            save_checkpoint(model, optimizer, iteration, config, ["latest.pkl"])
            say(f"{stop.signal or 'stop'}: saved iteration {iteration} to {config['work_dir']}/latest.pkl; "
                f"continue with --resume")
            break
    else:
        save_checkpoint(model, optimizer, iteration, config, ["latest.pkl"])
    bar.close()
    stop_workers(data)
    plot(config)
    return model


def main(argv=None):
    args = parse_args(argv)
    try:
        config = resolve_config(args)
        check_config(config, args)
        if jt.rank == 0:
            print(json.dumps(config, indent=2))
        train(config, args.resume)
    except (UsageError, CheckpointError, DatasetError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
