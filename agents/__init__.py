"""Agents by name: the config's ``agent`` key picks one; ``build_agent`` checks the names it assembles."""
from utils.errors import ConfigError, closest

from .base import BaseAgent
from .classification import ClassificationAgent
from .detection import DetectionAgent

AGENTS = {"ClassificationAgent": ClassificationAgent, "DetectionAgent": DetectionAgent}


def build_agent(config) -> BaseAgent:
    """The agent named by ``config.agent``, after it has checked the model/dataset/loss names."""
    if config.agent not in AGENTS:
        raise ConfigError(f"unknown agent {config.agent!r}{closest(config.agent, AGENTS)}; valid agents are: "
                          f"{', '.join(sorted(AGENTS))}")
    cls = AGENTS[config.agent]
    cls.check_config(config)
    return cls(config)
