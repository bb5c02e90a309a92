"""Orbax checkpoints of training runs: writing them, finding and restoring them.

Modules: `manager` (`Checkpointer`: the latest few and the best checkpoint of
a workdir, exact resume; `write_config`) and `restore` (`find_checkpoint`,
`restore_checkpoint`: the model variables of a workdir, manager or step
folder, for evaluation, prediction and the notebooks).
"""
