"""Calibration: measuring the user's own generators on reference prompts, for training a router on them.

``calibrate``  the campaign: generate images of reference prompts with every generator (through the generation
               engines), score each image as it is made, record it.
``scorer``     CLIPScore and PickScore from local weights, with their documented ranges.
``store``      the SQLite measurement store: campaign lock, recording, queries, export; rows and the long
               format itself belong to :mod:`catimg.measurements`. ``store_schema`` holds the database file
               (location, schema and version checks, connecting, transactions), ``store_import`` the import
               of measurement files (new, updated and unchanged scores).

Imports the foundations, :mod:`catimg.costs` and :mod:`catimg.generation`.
"""
