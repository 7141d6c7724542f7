"""Costs: what one image of a generator costs on this machine, in seconds.

``model``  the cost model: one rule for every command (explicit ``cost_seconds`` > measured on this device >
           the router's trained-with seconds > estimate from FLOPs and the device's throughput), memory
           feasibility (offload or excluded) and the notice when estimates drive routing.
``bench``  measuring: ``catimg bench`` times real pipelines, every local ``gen`` run feeds its times back, and
           the results are cached per device class and settings hash.

FLOP and weight-size counts of a model are a foundation (:mod:`catimg.flops`), shared with
:mod:`catimg.pipelines`. Nothing here imports routing, training, generation or calibration.
"""
