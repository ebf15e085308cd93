"""Train CCNet on ADE20K, Cityscapes or Pascal VOC (+SBD).

    python train.py --backbone van_base --pretrained pretrained/van_base.safetensors
    python train.py --backbone resnet101 --pretrained pretrained/resnet101_mit.safetensors
    python train.py --backbone resnet101 --preset cityscapes --data-root data/cityscapes --pretrained ...
    python train.py --resume work_dirs/ccnet_van_base/latest.safetensors

The loop below is the whole training step: data, forward, loss, backward and update, log,
checkpoint, evaluation. Defaults follow the published recipes, chosen by backbone: ResNet-101 the
official CCNet's (SGD, momentum 0.9, lr 0.01, weight decay 5e-4, poly 0.9 to 1e-4), VAN the VAN
authors' segmentation recipe (AdamW, lr 6e-5, weight decay 0.01, 1,500 warm-up iterations, poly
1.0); both 80k iterations of batch 16 at crop 512. --dataset picks Cityscapes or VOC with
ADE20K's recipe; --preset picks a dataset with its published recipe (PRESETS): "cityscapes" is the
official CCNet's (its README's training command: crop 769, batch 8, 60k iterations, SGD lr 0.01
poly 0.9 without floor, weight decay 1e-4, random scale 0.7-2.0 in steps of 0.1, flip, no
photometric distortion; --ohem for its OHEM model), "voc12aug" mmsegmentation's CCNet VOC 40k recipe.
Flags given win over the preset.

Under MPI (mpirun -np N python train.py ...) each process trains on its slice of the global batch:
gradients are averaged and batch-norm statistics shared (models/norm.py), dropout masks are drawn
for the global batch (models/stochastic.py), and only process 0 writes files. Randomness is a
function of (seed, iteration) and of (seed, draw) for augmentation, so a checkpoint needs no RNG
state for --resume to continue exactly.

A run ends cleanly whatever happens: SIGINT or SIGTERM save and stop (exit code 128 + N), a bad
file or a failed data worker is one line naming it (exit code 1, after saving the iteration
reached), a non-finite loss stops without saving, a file that cannot be written (a full disk) is one
line naming it and the last checkpoint (exit code 1); checkpoints are written atomically, so SIGKILL
loses only the iterations since the last one (docs/training.md, "Stopping, and what ends a run").
"""
import argparse
import json
import math
import os
import re
import signal
import sys
import time

import numpy as np
from tqdm import tqdm

import jittor_env  # noqa: F401
import jittor as jt
from jittor import nn

from datasets import DATASETS, DatasetError, Loader, LoaderError
from datasets.transforms import AUGMENTATIONS
from inference import evaluate
from curves import plot_curves
from losses import Ohem, category_consistent_loss, segmentation_loss
from checkpoints import (SUFFIX, CheckpointError, build_model, checkpoint_iteration, evaluation_protocol,
                         is_resumable, load_checked, read_record, read_state_dict, trained_arch, trained_protocol,
                         write_checkpoint)
from models import BACKBONES
from files import WriteError, append_line, link_atomic, make_folder, remove_partial_saves, write_text, writing

RECIPES = {
    "sgd": dict(lr=0.01, weight_decay=5e-4, warmup_iters=0, power=0.9, min_lr=1e-4),
    "adamw": dict(lr=6e-5, weight_decay=0.01, warmup_iters=1500, power=1.0, min_lr=0.0),
}
DEFAULTS = dict(dataset="ade20k", recurrence=2, iters=80_000, batch_size=16, crop_size=512, augmentation="mmseg",
                aux_weight=0.4, ohem=False, ccl=False, workers=2, seed=0, ckpt_interval=2000, eval_interval=8000,
                log_interval=20, pretrained=None, stop_timeout=60)
PRESETS = {
    "cityscapes": dict(dataset="cityscapes", optimizer="sgd", crop_size=769, batch_size=8, iters=60_000, lr=0.01,
                       weight_decay=1e-4, power=0.9, min_lr=0.0, warmup_iters=0, augmentation="official",
                       eval_interval=6000),
    "voc12aug": dict(dataset="voc12aug", optimizer="sgd", crop_size=512, batch_size=16, iters=40_000, lr=0.01,
                     weight_decay=5e-4, power=0.9, min_lr=1e-4, warmup_iters=0, augmentation="mmseg",
                     eval_interval=4000),
}
GET_DATA = {
    "ade20k": "Get ADEChallengeData2016.zip (the MIT Scene Parsing benchmark), unpack it and pass --data-root "
              "path/to/ADEChallengeData2016 (see docs/datasets.md, 'ADE20K').",
    "cityscapes": "Get leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip (cityscapes-dataset.com), unpack "
                  "both into one folder and pass it as --data-root (see docs/datasets.md, 'Cityscapes and Pascal VOC').",
    "voc12aug": "Get VOCtrainval_11-May-2012.tar and the SBD labels converted to SegmentationClassAug with aug.txt, "
                "and pass --data-root path/to/VOCdevkit/VOC2012 (see docs/datasets.md, 'Cityscapes and Pascal VOC').",
}
NO_DATA = ("no {name} found: {error}\n{get}\n"
           "To see the whole pipeline now, on a generated dataset and the CPU: make demo")


class UsageError(Exception):
    """Bad input found before any work starts: printed as one line, exit code 2."""


class TrainingError(Exception):
    """The run cannot go on (a non-finite loss): printed as one line, exit code 1."""


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])  # defaults in the help: per backbone
    m = p.add_argument_group("model")
    m.add_argument("--backbone", choices=BACKBONES, help="required unless --resume")
    m.add_argument("--recurrence", type=int, help="criss-cross recurrences R (default 2)")
    m.add_argument("--pretrained", help="converted ImageNet backbone weights (tools/convert_weights.py)")
    d = p.add_argument_group("data")
    d.add_argument("--preset", choices=PRESETS, help="a dataset with its published recipe: cityscapes (the "
                   "official CCNet's), voc12aug (mmsegmentation's); flags given win")
    d.add_argument("--dataset", choices=DATASETS, help="default ade20k")
    d.add_argument("--data-root", help="the dataset's root (default: " +
                   ", ".join(f"{name} {cls.DEFAULT_ROOT}" for name, cls in DATASETS.items()) + ")")
    d.add_argument("--crop-size", type=int, help="training crop (default 512; cityscapes preset 769)")
    d.add_argument("--img-scale", type=int, nargs=2, metavar=("LONG", "SHORT"),
                   help="keep-ratio resize limits, randomised in training (default: the dataset's test scale, "
                        "2048 512; Cityscapes 2048 1024)")
    d.add_argument("--augmentation", choices=AUGMENTATIONS, help="mmseg (random ratio 0.5-2.0, crop where no "
                   "class covers 75%%, photometric distortion; the default) or official (0.7-2.0 in steps "
                   "of 0.1, any crop, none)")
    d.add_argument("--workers", type=int, help="data loading processes (default 2)")
    s = p.add_argument_group("schedule")
    s.add_argument("--iters", type=int, help="training iterations (default 80000)")
    s.add_argument("--batch-size", type=int, help="global batch, split across processes (default 16)")
    s.add_argument("--optimizer", choices=RECIPES, help="default per backbone: sgd for resnet101, adamw for VAN")
    s.add_argument("--lr", type=float, help="base learning rate (default per backbone: 0.01 SGD, 6e-5 AdamW)")
    s.add_argument("--weight-decay", type=float, help="default per backbone: 5e-4 SGD, 0.01 AdamW")
    s.add_argument("--warmup-iters", type=int, help="linear warm-up (default per backbone: 0 SGD, 1500 AdamW)")
    s.add_argument("--min-lr", type=float, help="floor of the poly decay (default per backbone: 1e-4 SGD as "
                   "mmsegmentation, 0 AdamW; the official CCNet code has none: 0)")
    s.add_argument("--seed", type=int, help="seed of data order, augmentation and dropout (default 0)")
    l_ = p.add_argument_group("loss")
    l_.add_argument("--aux-weight", type=float, help="weight of the auxiliary (DSN) loss (default 0.4)")
    l_.add_argument("--ohem", action="store_true", default=None, help="online hard example mining (0.7, 100k)")
    l_.add_argument("--ccl", action="store_true", default=None,
                    help="add the category consistent loss on the RCCA features (TPAMI version)")
    r = p.add_argument_group("run")
    r.add_argument("--work-dir", help="where checkpoints and logs go (default work_dirs/ccnet_BACKBONE)")
    r.add_argument("--resume", help="a checkpoint of this script to continue exactly")
    r.add_argument("--overwrite", action="store_true",
                   help="start afresh in a work dir that has checkpoints (deletes its checkpoints and log)")
    r.add_argument("--ckpt-interval", type=int, help="iterations between kept checkpoints (default 2000)")
    r.add_argument("--eval-interval", type=int, help="iterations between evaluations, 0 = none (default 8000)")
    r.add_argument("--log-interval", type=int, help="iterations between log lines (default 20)")
    r.add_argument("--stop-timeout", type=int, help="seconds a run may take to save and stop after SIGINT or "
                   "SIGTERM before it is ended without saving (default 60)")
    r.add_argument("--allow-global", action="append", default=[], metavar="MODULE.NAME",
                   help="read a pickled --resume or --pretrained file that names this global; it is kept as "
                        "inert data, never imported or called (docs/checkpoints.md)")
    return p.parse_args(argv)


def resolve_config(args):
    """The full configuration: checkpoint (on --resume), then flags given, then recipe defaults."""
    given = {k: v for k, v in vars(args).items()
             if v is not None and k not in ("resume", "overwrite", "preset", "allow_global")}
    preset = PRESETS[args.preset] if args.preset else {}
    base = {}
    if args.resume:
        base = load_resume(args.resume, args.allow_global)["config"]
        if args.preset:
            raise UsageError("--preset starts a run; a resumed run keeps its checkpoint's recipe")
        for key in ("backbone", "dataset", "recurrence", "num_classes", "ccl"):
            saved = base.get(key, DEFAULTS.get(key))
            if key in given and given[key] != saved:
                raise UsageError(f"--{key.replace('_', '-')} {given[key]} differs from the checkpoint's "
                                 f"{saved} ({args.resume})")
    elif not args.backbone:
        raise UsageError("--backbone is required (one of " + ", ".join(BACKBONES) + ") unless --resume")
    config = {**DEFAULTS, **preset, **base, **given}
    dataset = DATASETS[config["dataset"]]
    config.setdefault("data_root", dataset.DEFAULT_ROOT)
    config.setdefault("img_scale", list(dataset.SCALE))
    config.setdefault("optimizer", "sgd" if config["backbone"] == "resnet101" else "adamw")
    for key, value in RECIPES[config["optimizer"]].items():
        config.setdefault(key, value)
    config.setdefault("work_dir", f"work_dirs/ccnet_{config['backbone']}")
    config["num_classes"] = len(dataset.NAMES)
    return config


def check_config(config, args):
    """Every check that can fail, before any work."""
    for key in ("iters", "batch_size", "crop_size", "ckpt_interval", "log_interval", "stop_timeout"):
        if config[key] <= 0:
            raise UsageError(f"--{key.replace('_', '-')} must be positive, got {config[key]}")
    for key in ("workers", "eval_interval"):
        if config[key] < 0:
            raise UsageError(f"--{key.replace('_', '-')} must be 0 or more, got {config[key]}")
    largest = int(min(config["img_scale"]) * AUGMENTATIONS[config["augmentation"]].ratio_range[1])
    if min(config["img_scale"]) <= 0:
        raise UsageError(f"--img-scale must be positive, got {config['img_scale']}")
    if config["crop_size"] > largest:
        raise UsageError(f"--crop-size {config['crop_size']} is larger than any training image becomes "
                         f"(short side at most {largest} after the random resize)")
    if config["recurrence"] < 0:
        raise UsageError(f"--recurrence must be >= 0, got {config['recurrence']}")
    if jt.in_mpi and config["batch_size"] % jt.world_size:
        raise UsageError(f"--batch-size {config['batch_size']} does not split over {jt.world_size} processes")
    dataset = DATASETS[config["dataset"]]
    try:
        dataset.list_split(config["data_root"], dataset.TRAIN_SPLIT)
        if config["eval_interval"]:
            dataset.list_split(config["data_root"], dataset.VAL_SPLIT)
    except DatasetError as error:
        raise UsageError(NO_DATA.format(name=dataset.TITLE, error=error, get=GET_DATA[dataset.NAME])) from None
    if config["pretrained"] and not os.path.isfile(config["pretrained"]):
        raise UsageError(f"{config['pretrained']}: no such file (--pretrained)")
    latest = [path for path in (latest_path(config), latest_path(config, ".pkl")) if os.path.exists(path)]
    if not args.resume and latest and not args.overwrite:
        raise UsageError(f"{config['work_dir']} already has checkpoints; continue with --resume {latest[0]} "
                         f"or start afresh with --overwrite")


_resume_cache = {}


def load_resume(path, allow=()):
    if path not in _resume_cache:
        checkpoint = read_record(path, allow)
        if not is_resumable(checkpoint):
            raise CheckpointError(f"{path}: cannot resume from an evaluation-only checkpoint (it has no "
                                  f"optimizer state or iteration); evaluate it with test.py --ckpt {path}")
        _resume_cache[path] = checkpoint
    return _resume_cache[path]


def make_optimizer(model, config):
    """SGD on every trainable tensor (official CCNet); AdamW as the VAN authors' segmentation
    recipe, whose parameters named "...norm..." get no weight decay (mmcv's custom_keys 'norm')."""
    params = [(name, p) for name, p in model.named_parameters() if not p.is_stop_grad()]
    if config["optimizer"] == "sgd":
        return nn.SGD([p for _, p in params], config["lr"], momentum=0.9, weight_decay=config["weight_decay"])
    groups = [{"params": [p for name, p in params if "norm" not in name]},
              {"params": [p for name, p in params if "norm" in name], "weight_decay": 0.0}]
    return nn.AdamW([g for g in groups if g["params"]], config["lr"], weight_decay=config["weight_decay"],
                    betas=(0.9, 0.999))


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


def latest_path(config, suffix=SUFFIX):
    return os.path.join(config["work_dir"], "latest" + suffix)


def save_checkpoint(model, optimizer, iteration, config, keep):
    """Write the state as latest.safetensors, atomically; with `keep` as iter_N.safetensors too (one
    file, two names).
    Every process fetches the values (they may still depend on a pending gradient all-reduce);
    process 0 writes."""
    checkpoint = {"model": {k: v.numpy() for k, v in model.state_dict().items()},
                  "optimizer": optimizer_state(optimizer), "iteration": iteration, "config": config,
                  "arch": trained_arch(config), "protocol": trained_protocol(config)}
    if jt.rank != 0:
        return
    if keep:
        kept = os.path.join(config["work_dir"], f"iter_{iteration}{SUFFIX}")
        write_checkpoint(checkpoint, kept)
        link_atomic(kept, latest_path(config))
    else:
        write_checkpoint(checkpoint, latest_path(config))


def logged_iteration(line):
    """The iteration of a log.jsonl line; infinity for a line cut short by a killed write."""
    try:
        return json.loads(line)["iter"]
    except (ValueError, KeyError, TypeError):
        return math.inf


def prepare_work_dir(config, start, overwrite):
    """Make the work dir hold this run alone: no partial saves of a killed run, the log cut back to
    the resumed iteration (a dead run's later records would be drawn twice), nothing of a previous
    run with --overwrite."""
    work_dir = config["work_dir"]
    if jt.rank != 0:
        return
    make_folder(work_dir)
    remove_partial_saves(work_dir)
    log = os.path.join(work_dir, "log.jsonl")
    if overwrite:
        for name in os.listdir(work_dir):
            if name in ("log.jsonl", "curves.png") or re.fullmatch(r"(latest|iter_\d+)\.(safetensors|pkl)", name):
                with writing(os.path.join(work_dir, name)):
                    os.remove(os.path.join(work_dir, name))
    elif os.path.exists(log):
        with open(log) as f:
            kept = [line for line in f if logged_iteration(line) <= start]
        write_text(log, "".join(kept))
    write_text(os.path.join(work_dir, "config.json"), json.dumps(config, indent=2))


class StopRequest:
    """SIGINT / SIGTERM: save and stop after the current iteration, or at once while waiting for
    data. The signal also starts a deadline of `timeout` seconds (SIGALRM's default action, which
    ends the process even inside a long computation, where no Python code runs); a second signal
    ends it at once. Checkpoints on disk are whole either way (atomic saves)."""

    def __init__(self, timeout):
        self.signal, self.timeout, self.pid = None, timeout, os.getpid()
        self.previous = {sig: signal.signal(sig, self.handle) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handle(self, signum, frame):
        if os.getpid() != self.pid:  # a data worker, forked before it reset its handlers
            os._exit(0)
        name = signal.Signals(signum).name
        if self.signal:
            os.write(2, f"\n{name} again: stopped at once, without saving\n".encode())
            os._exit(128 + signum)
        self.signal = name
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(self.timeout)
        os.write(2, f"\n{name}: saving and stopping after this iteration (within {self.timeout} s; "
                    f"send it again to stop at once without saving)\n".encode())

    def requested(self):
        return self.signal is not None

    def restore(self):
        signal.alarm(0)
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def log_line(config, record):
    if jt.rank == 0:
        append_line(os.path.join(config["work_dir"], "log.jsonl"), json.dumps(record))


def resident_mib():
    """This process's resident memory in MiB (Linux), else None."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return None


def say(message):
    if jt.rank == 0:
        tqdm.write(message)


def plot(config):
    log = os.path.join(config["work_dir"], "log.jsonl")
    if jt.rank == 0 and os.path.exists(log):
        plot_curves(log, os.path.join(config["work_dir"], "curves.png"),
                    f"CCNet {config['backbone']}, R={config['recurrence']}")


def training_loss(outputs, labels, config, ohem):
    """Main + aux_weight * auxiliary cross-entropy (+ the category consistent loss with --ccl).
    OHEM selects pixels for the main loss only, as the official CriterionOhemDSN does."""
    main, aux, *embedding = outputs
    loss = segmentation_loss(main, labels, ohem) + config["aux_weight"] * segmentation_loss(aux, labels)
    if embedding:
        loss = loss + category_consistent_loss(embedding[0], labels)
    return loss


class Losses:
    """Each iteration's loss, delivered to the host when it has been computed (jt.fetch) instead of
    the loop waiting for it: on a GPU the next step's graph building then overlaps this step's
    kernels. A non-finite loss that has arrived stops the run (one iteration later, or at the next
    settle under MPI); where the loop needs the exact loss or a decision every process shares (a log
    line, a checkpoint, an evaluation, a stop), it settles: waits for every loss sent, and under MPI
    the processes agree on the mean loss, a stop and a NaN anywhere."""

    def __init__(self, config):
        self.config, self.latest, self.first_bad, self.sent = config, (0, math.nan), None, None

    def send(self, iteration, loss):
        """Fetch `loss` once it is computed, and compute it: on a GPU its kernels are launched, not
        waited for. (The forward and the loss run as one graph and the update with the next step's,
        as when the loop read the loss at once: Jittor fuses the same operators, the numbers are
        the same.)"""
        self.sent = (iteration, loss)
        jt.fetch(loss, lambda value: self.arrive(iteration, float(np.asarray(value).reshape(-1)[0])))
        loss.sync()

    def arrive(self, iteration, value):
        self.latest = max(self.latest, (iteration, value), key=lambda pair: pair[0])
        if not math.isfinite(value) and self.first_bad is None:
            self.first_bad = (iteration, value)

    def check(self):
        """Stop on a non-finite loss that has arrived (one process: the others would wait for it)."""
        if self.first_bad is not None:
            iteration, value = self.first_bad
            raise TrainingError(f"iteration {iteration}: the loss is {value}; stopped without saving (the "
                                f"last checkpoint in {self.config['work_dir']} is intact)")

    def settle(self, stop):
        """(the last iteration's loss, whether to stop), the same in every process."""
        if self.sent is not None and self.latest[0] < self.sent[0]:  # not delivered yet: wait for it
            self.arrive(self.sent[0], self.sent[1].item())
        value, stopping = self.latest[1], stop.requested()
        if jt.in_mpi:
            shared = jt.array([value, float(stopping), float(self.first_bad is not None)]).mpi_all_reduce("mean")
            value, stopping, bad = (float(v) for v in shared.numpy())
            if bad and self.first_bad is None:
                self.first_bad = (self.latest[0], math.nan)  # another process's loss
        self.check()
        return value, stopping > 0


def train(config, resume=None, overwrite=False, allow=()):
    """Train as `config` says; returns (model, the signal that stopped it or None). `allow`: globals
    a pickled --resume or --pretrained file may name (kept inert)."""
    jt.set_global_seed(config["seed"], different_seed_for_mpi=False)  # the same initial weights
    model = build_model(trained_arch(config))
    optimizer = make_optimizer(model, config)
    start = 0
    if resume:
        checkpoint = load_resume(resume, allow)
        load_checked(model, checkpoint["model"], resume)
        restore_optimizer(optimizer, checkpoint["optimizer"], resume)
        start = checkpoint["iteration"]
    elif config["pretrained"]:
        backbone = model if config["backbone"] == "resnet101" else model.backbone
        load_checked(backbone, read_state_dict(config["pretrained"], allow=allow), config["pretrained"],
                     may_miss=("head.", "dsn.") if backbone is model else ())
    prepare_work_dir(config, start, overwrite)

    batch = config["batch_size"]
    dataset = DATASETS[config["dataset"]]
    data = dataset(config["data_root"], dataset.TRAIN_SPLIT, config["backbone"], config["crop_size"], config["seed"],
                   scale=config["img_scale"], augmentation=AUGMENTATIONS[config["augmentation"]])
    val = dataset(config["data_root"], dataset.VAL_SPLIT, config["backbone"]) if config["eval_interval"] else None
    protocol = evaluation_protocol(trained_protocol(config))
    ohem = Ohem() if config["ohem"] else None
    stop = StopRequest(config["stop_timeout"])
    losses = Losses(config)
    # under MPI every process must take the same steps: they stop together, where they settle
    loader = Loader(data, batch, start * batch, config["iters"] * batch, config["workers"],
                    until=None if jt.in_mpi else stop.requested, part=(jt.rank, jt.world_size))
    model.train()
    bar = tqdm(total=config["iters"], initial=start, unit="it", disable=jt.rank != 0, dynamic_ncols=True)
    iteration, tic, since = start, time.time(), start  # timing of the current log interval
    saved = None if resume else start  # the iteration latest.safetensors holds (a fresh start needs none)
    try:
        for images, labels in loader:
            lr = learning_rate(iteration, config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            # dropout depends on the iteration only, and is the same in every process (global-batch masks)
            jt.set_seed(config["seed"] * 1_000_003 + iteration)
            loss = training_loss(model(jt.array(images)), jt.array(labels), config, ohem)
            optimizer.step(loss)
            iteration += 1
            losses.send(iteration, loss)
            logging = iteration % config["log_interval"] == 0 or iteration == config["iters"]
            evaluating = val is not None and iteration % config["eval_interval"] == 0
            stopping = False
            if logging or evaluating or iteration % config["ckpt_interval"] == 0 or \
                    (stop.requested() and not jt.in_mpi):
                value, stopping = losses.settle(stop)
            elif not jt.in_mpi:
                losses.check()
            bar.update(1)
            bar.set_postfix(loss=f"{losses.latest[1]:.4f}", lr=f"{lr:.2e}")
            if logging:
                log_line(config, {"iter": iteration, "loss": value, "lr": lr,
                                  "seconds_per_iter": (time.time() - tic) / (iteration - since),
                                  "rss_mib": resident_mib()})
                tic, since = time.time(), iteration
            if iteration % config["ckpt_interval"] == 0:
                save_checkpoint(model, optimizer, iteration, config, keep=True)
                saved = iteration
            if evaluating:
                evaluation_start = time.time()
                results = evaluate(model, val, protocol, config["num_classes"], progress=False)
                log_line(config, {"iter": iteration, "eval": {k: results[k] for k in ("aAcc", "mIoU", "mAcc")}})
                say(f"iteration {iteration}: mIoU {100 * results['mIoU']:.2f} aAcc {100 * results['aAcc']:.2f}")
                plot(config)
                model.train()
                tic += time.time() - evaluation_start  # evaluation time is not training time
            if stopping:
                break
        if saved != iteration:  # within the stop deadline
            losses.settle(stop)
            save_checkpoint(model, optimizer, iteration, config, keep=False)
    except (DatasetError, LoaderError) as error:
        if saved != iteration and not jt.in_mpi:  # the state of a whole iteration: keep it
            losses.settle(stop)
            save_checkpoint(model, optimizer, iteration, config, keep=False)
            error.args = (f"{error} (saved iteration {iteration} to {latest_path(config)}: "
                          f"continue with --resume once the data is fixed)",)
        raise
    finally:
        bar.close()
        loader.close()
        stop.restore()
    if stop.signal:
        say(f"{stop.signal}: stopped at iteration {iteration}" +
            (f"; continue with --resume {latest_path(config)}" if iteration else ""))
    plot(config)
    return model, stop.signal


def where_to_continue(config, resume):
    """The last checkpoint of a run that could not write a file, and how to continue from it."""
    latest = latest_path(config)
    iteration = checkpoint_iteration(latest) if os.path.exists(latest) else None
    if iteration is not None:
        return f"the last checkpoint is {latest} (iteration {iteration}); once fixed, continue with --resume {latest}"
    if resume:
        return f"the last checkpoint is {resume}; once fixed, continue with --resume {resume}"
    return "no checkpoint was written"


def main(argv=None):
    """Exit code 0 when the schedule is done, 128 + N when signal N stopped it (after saving), 2 on
    bad input, 1 when the data or the loss fails or a file cannot be written during the run."""
    args = parse_args(argv)
    try:
        config = resolve_config(args)
        check_config(config, args)
        if jt.rank == 0:
            print(json.dumps(config, indent=2))
        _, stopped_by = train(config, args.resume, args.overwrite, args.allow_global)
    except (UsageError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (DatasetError, LoaderError, TrainingError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except WriteError as error:
        print(f"error: {error}; {where_to_continue(config, args.resume)}", file=sys.stderr)
        return 1
    return 128 + signal.Signals[stopped_by] if stopped_by else 0


if __name__ == "__main__":
    sys.exit(main())
