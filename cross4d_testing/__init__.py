"""Support code of the tests, the benchmarks and the demo; not part of the product.

``setup.py`` and ``CMakeLists.txt`` install only ``cross4d_core`` and ``cross4d_ros``, and
``tests/test_package_boundaries.py`` checks that neither imports this package.

- :mod:`cross4d_testing.replay`: play point-cloud sequences or a rosbag2 into ROS topics
  (what ``ros2 bag play --clock`` does, without ros2cli, which is not on PyPI); ``wait_until``;
- :mod:`cross4d_testing.nodes`: the nodes in-process next to a test node
  (:class:`~cross4d_testing.nodes.NodeHarness`) or as their executables in their own process
  (:func:`~cross4d_testing.nodes.node_command`, :class:`~cross4d_testing.nodes.NodeProcess`),
  malformed input, a tiny trained recognizer.
"""
