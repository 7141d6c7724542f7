from __future__ import annotations  # routing commands: explain, models, doctor, train, eval (to be written)
