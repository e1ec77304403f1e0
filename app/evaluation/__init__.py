"""Evaluation of checkpoints and base models: metric definitions, requests and rankings.

The measuring itself runs in the worker (``worker.evaluation``); nothing here imports torch.
"""
