"""The command-line tools: the demo, the converter, generated datasets, the ablation and the checks."""
