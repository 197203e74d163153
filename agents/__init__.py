"""Agents by name: the config's ``agent`` key picks one; ``build_agent`` checks the names it assembles."""
import importlib

from utils.errors import ConfigError, closest

from .base import BaseAgent
from .classification import ClassificationAgent

# name -> module defining it; imported on first use, so a classification run never loads torchvision's
# detection stack (its C++ extension and detection models)
AGENT_MODULES = {"ClassificationAgent": "agents.classification", "DetectionAgent": "agents.detection"}


def get_agent_class(name: str) -> type:
    """The agent class called ``name`` (one sentence naming the valid ones when there is none)."""
    if name not in AGENT_MODULES:
        raise ConfigError(f"unknown agent {name!r}{closest(name, AGENT_MODULES)}; valid agents are: "
                          f"{', '.join(sorted(AGENT_MODULES))}")
    return getattr(importlib.import_module(AGENT_MODULES[name]), name)


def build_agent(config, experiment=None) -> BaseAgent:
    """The agent named by ``config.agent``, after it has checked the model/dataset/loss names;
    ``experiment``: its utils.experiment.ExperimentFolder (default: a new one)."""
    cls = get_agent_class(config.agent)
    cls.check_config(config)
    return cls(config, experiment)
