"""Training: from measurements (long-format files, the calibration store) to a router artifact.

``train``     the use case behind ``catimg train``: encode, fit the predictor, cross-validate the held-out
              numbers of the data card, calibrate the budget levels, save.
``joint``     several data sets on one 0-1 scale (each by its metric's documented range) and their comparison.
``evaluate``  held-out routing numbers: quality-cost curves, AUC, APGR, cost to match the best generator.
``sources``   the documented metric ranges and the attribution cards of the public data sets.

Imports the foundations, :mod:`catimg.costs`, :mod:`catimg.routing` (the artifact it writes) and the scorers'
metric ranges from :mod:`catimg.calibration.scorer`; nothing imports training except the CLI and benchmarks.
"""
