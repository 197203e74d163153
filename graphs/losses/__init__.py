"""Losses by name: the config's ``loss`` key picks one."""
from graphs.losses.cross_entropy import build_cross_entropy

LOSSES = {"cross_entropy": build_cross_entropy}


def build_loss(config):
    return LOSSES[config.loss](config)
