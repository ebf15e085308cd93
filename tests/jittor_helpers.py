"""Helpers shared by the tests that compare Jittor modules with the NumPy references or count the
operators Jittor runs."""
import numpy as np

import jittor as jt


def load_random_float64(module, seed, scale=0.5, **fixed):
    """Turn `module` to float64 with random weights (positive running variances); return them.

    Keyword arguments fix named parameters, e.g. gamma=np.array([0.7]).
    """
    rng = np.random.default_rng(seed)
    module.float64()
    params = {}
    for name, var in module.state_dict().items():
        if name.endswith("running_var"):
            params[name] = rng.uniform(0.5, 1.5, var.shape)
        else:
            params[name] = rng.standard_normal(var.shape) * scale
    params.update(fixed)
    module.load_parameters(params)
    return params


def profiled(run):
    """run()'s result and the operators Jittor ran meanwhile, as (name, runs) from its profiler."""
    with jt.profile_scope() as report:
        result = run()
    name, count = report[0].index("Name"), report[0].index("Count")
    return result, [(row[name], int(row[count])) for row in report[1:]]
