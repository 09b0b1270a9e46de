"""``make demo`` (``python -m examples.demo``): the whole pipeline on the synthetic world.

- ``__main__``: the steps, each a ``cross4d`` command, and the report;
- :mod:`examples.demo.replay`: the ROS step (``perception_node`` on the replayed bag);
- :mod:`examples.demo.figures`: the report's figures that are not read from result JSONs.
"""
