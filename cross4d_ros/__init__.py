"""cross4d_ros: rclpy nodes and thin message helpers on top of cross4d_core."""
