"""The evaluation process: ``python -m worker.evaluation EVALUATION_ID ERROR_FILE``.

``run`` loads the evaluation and its model, ``measures`` computes each metric.
"""
