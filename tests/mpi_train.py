"""Run train.py's training in this process and save its final weights as rank{R}.npz in the work
dir, so that a test can compare what every MPI process ends with (train.py itself writes only
from process 0)."""
import os
import sys

import numpy as np

import jittor as jt

import train

if __name__ == "__main__":
    args = train.parse_args(sys.argv[1:])
    config = train.resolve_config(args)
    train.check_config(config, args)
    model, _ = train.train(config)
    weights = {name: value.numpy() for name, value in model.state_dict().items()}
    np.savez(os.path.join(config["work_dir"], f"rank{jt.rank}.npz"), **weights)
