"""cross4d_core: the ROS-free half of cross4d.

Geometry, dense cross-modal correspondence, frozen 2D teachers, the POINT4D student,
objectives, training, datasets and evaluation for Cross4D-JEPA. Nothing here imports
rclpy or a ROS message type; message decoding duck-types on message fields so it
serves rclpy messages and `rosbags` messages alike.
"""

__version__ = "0.1.0"
