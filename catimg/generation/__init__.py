"""Generation: from a routed plan to PNGs on disk and one manifest record per image.

``run``         the ``catimg gen`` use case: ``plan_run`` (resume seed, routing, re-planning around missing
                weights), then ``make_images`` through an engine, and the run's ``Spend``.
``generate``    the plan (``PlanItem``, ``build_plan``, run settings) and the local engine.
``execution``   the execution core both engines share: batching a plan, the image maker (diffusers call,
                seeding, step callbacks, memory-saving retry), the retry policy, the recorder, ``RunOptions``
                and the ``Engine`` protocol.
``ray_engine``  the Ray engine: a driver class and workers that run the same batch runner.
``schedule``    placing a plan on the workers of a cluster for a total budget.
``output``      atomic PNGs with metadata, the manifest, the folder lock.
``resume``      what of a plan a folder already holds (matched by what the images are).
``events``      the typed progress events both engines emit.

Imports the foundations, :mod:`catimg.costs` and :mod:`catimg.routing`; calibration runs its campaigns through
these engines.
"""
