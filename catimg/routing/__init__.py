"""Routing: from a prompt to the generator that gives the most predicted quality for the budget.

Data flow: prompt -> ``encoder`` (MiniLM embedding, ``minilm`` is its plain-torch forward, cached in SQLite)
-> ``router`` (the trained artifact: a ``predictor`` per generator plus the data card) -> predicted quality
and uncertainty -> ``rule`` (normalise quality and cost, argmax q - lambda c, switch points) with lambda from
``budget`` (levels, per-image seconds, a total budget) -> ``route`` (statuses, score matrix, solve,
explanation, summary: what ``explain``, ``plan`` and ``gen`` show).
``diagnose`` is the ``catimg doctor`` use case: catalog, device, weights and router checked together.

Imports only the foundations and :mod:`catimg.costs`; training builds routers (``catimg.training``),
generation consumes routing results (``catimg.generation``).
"""
