"""A training run: the recipe (training.py) and the rooms it calls: the Trainer, the step-boundary callback,
checkpoints and resume, stop signals, several processes, the run folder, evaluation and tracking."""
