"""Calibration: measuring the user's own generators on reference prompts, for training a router on them.

``calibrate``  the campaign: generate images of reference prompts with every generator (through the generation
               engines), score each image as it is made, record it.
``scorer``     CLIPScore and PickScore from local weights, with their documented ranges.
``store``      the SQLite measurement store (schema version, campaign lock, export and import); rows and the
               long format itself belong to :mod:`catimg.measurements`.

Imports the foundations, :mod:`catimg.costs` and :mod:`catimg.generation`.
"""
