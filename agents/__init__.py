"""Agents by name: the config's ``agent`` key picks one."""
from agents.classification import ClassificationAgent

AGENTS = {"ClassificationAgent": ClassificationAgent}
