"""Orbax checkpoints of training runs: writing them, finding and restoring them.

Modules: `manager` (`Checkpointer`: the latest few and the best checkpoint of
a workdir, exact resume, past an unreadable latest step; `write_config`),
`restore` (`find_checkpoint`, `restore_checkpoint`: the model variables of a
workdir, manager or step folder, for evaluation, prediction and the
notebooks) and `workdir_lock` (one writing run per workdir).
"""
