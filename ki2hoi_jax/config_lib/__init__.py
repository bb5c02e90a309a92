"""Run configs: validation of config values, and configs saved with checkpoints.

Modules: `validation` (`validate`, `ConfigError`: every field value checked
with a message naming it) and `saved` (`config_from_saved`,
`check_saved_config`, `check_config_matches`: the config JSON written beside
a checkpoint, and a given config compared with it).
"""
